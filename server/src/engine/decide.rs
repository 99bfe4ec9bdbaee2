//! The rules of a rollout as one pure function: given the state, what was observed and the
//! time, `decide` says which actions to take, the next state and the events to record.
//! Commands from callers (abort, pause, resume, promote) go through `apply_command`, pure too;
//! so do the first state of a rollout (`start`), the weight a restarted server reads back
//! (`resumed_at`), the judgement of one measurement (`evaluate`, `evaluate_all`) and which
//! webhooks are due before a decision (`hooks_due`). Every rollout rule lives here; no I/O:
//! the driver observes (and calls the webhooks due) before and acts after. Depends on domain
//! types only.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::judging::number;
use crate::domain::{
    AnalysisRecord, AnalysisSettings, Breaches, CheckKind, CheckOutcome, CheckResult,
    DeploymentView, Ending, EventKind, Gates, HookAnswer, HpaView, MetricCheck, Phase,
    QuietRepeats, Rollout, RolloutEvent, RouteView, Sample, WebhookKind, promoted_template,
    template_hash,
};

/// How often a rollout that waits on Kubernetes (readiness, GA's rollout) looks again.
pub const POLL: Duration = Duration::from_millis(500);
/// How often such a rollout looks again when changes to its objects wake it (see
/// [`Decision::watch`]): the look that catches what no change announced (an HPA's, a lost
/// watch event). Never longer than the rollout's interval.
pub const WATCHED_POLL: Duration = Duration::from_secs(5);
/// How long a rollout with nothing to do sleeps (commands wake it).
pub const IDLE: Duration = Duration::from_secs(3600);
/// Consecutive "no data" checks with the same reason recorded in full before their repeats
/// are recorded only once per `quiet_window`.
pub const REPEATS_IN_FULL: u32 = 3;
/// Shortest time between two recorded repeats of the same "no data" reason.
pub const MIN_QUIET: Duration = Duration::from_secs(60);
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
    /// The engine's `check_tick`: checks wait for a shared tick (`until_tick`).
    pub check_tick: Duration,
    /// The VirtualService as last seen.
    pub route: RouteView,
    /// A canary weight the driver wrote (or tried to) that the state does not record yet:
    /// seeing it in the VirtualService is not someone else's edit.
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

/// The first state of a rollout, checked against the cluster by the caller, and its
/// `Started` event: pending at the canary weight the VirtualService routes now, with the
/// canary's current revision and the fingerprint of the routes it splits.
pub fn start(
    rollout: Rollout,
    canary_revision: String,
    canary_weight: u32,
    route_fingerprint: String,
) -> Decision {
    let mut d = Decision::new(&rollout);
    d.next.phase = Phase::Pending;
    d.next.revision = canary_revision;
    d.next.canary_weight = canary_weight;
    d.next.route_fingerprint = Some(route_fingerprint);
    d.wake = Duration::ZERO;
    let settings = &rollout.analysis;
    d.emit(
        EventKind::Started,
        format!(
            "rollout of {}/{} started: canary {} via VirtualService {}, {}% steps up to {}% every {}, success rate >= {}%{}",
            rollout.namespace,
            rollout.target,
            rollout.canary,
            rollout.virtual_service,
            settings.step_weight,
            settings.max_weight,
            humantime::format_duration(settings.interval),
            settings.success_rate_threshold,
            settings
                .max_latency_p99_ms
                .map(|max| format!(", p99 latency <= {max}ms"))
                .unwrap_or_default()
        ) + &judged_on(settings),
    );
    d
}

/// What a rollout is judged on besides its success rate and latency, for its first event.
fn judged_on(settings: &AnalysisSettings) -> String {
    let mut parts = Vec::new();
    if !settings.metrics.is_empty() {
        let metrics: Vec<String> = settings
            .metrics
            .iter()
            .map(|m| format!("{} {}", m.template, m.bounds()))
            .collect();
        parts.push(format!("metrics {}", metrics.join(", ")));
    }
    if !settings.webhooks.is_empty() {
        let hooks: Vec<String> = settings
            .webhooks
            .iter()
            .map(|w| format!("{} ({})", w.name, w.kind.name()))
            .collect();
        parts.push(format!("webhooks {}", hooks.join(", ")));
    }
    if settings.require_approval {
        parts.push("promotion awaits approval (PromoteRollout)".to_owned());
    }
    parts.iter().map(|p| format!("; {p}")).collect()
}

/// After a restart the VirtualService is the truth about traffic: a step may have been
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
            "resumed: VirtualService {} routes {weight}% to the canary (state had {}%)",
            state.virtual_service, state.canary_weight
        ),
    );
    Some(d)
}

/// Whether a restarted server reads the rollout's canary weight back from the VirtualService:
/// in the phases whose weight the rollout itself moves.
pub fn reads_weight_back(state: &Rollout) -> bool {
    matches!(
        state.phase,
        Phase::Progressing | Phase::Paused | Phase::Promoting
    )
}

/// Whether GA already runs the canary's pod template (with GA's own selector labels): the
/// canary's revision is GA's already, so promoting it copies nothing and auto mode has nothing
/// to start.
pub fn ga_runs_canary(ga: &DeploymentView, canary: &DeploymentView) -> bool {
    template_hash(&promoted_template(
        &canary.template,
        &canary.selector,
        &ga.selector,
    )) == template_hash(&ga.template)
}

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

/// The verdict on one measurement of the canary.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Too little traffic, or values that are not numbers, and no failure: neither a pass nor
    /// a failure. `key` names the kind of reason (its repeats are recorded sparingly), `why`
    /// says it.
    NoData {
        key: &'static str,
        why: String,
        checks: Vec<CheckResult>,
    },
    /// Every checked value is within its bound; `measured` says each value against it.
    Pass {
        measured: String,
        request_rate: Option<f64>,
        checks: Vec<CheckResult>,
    },
    /// At least one value missed its bound: `why` says those that did, `measured` every
    /// value against its bound, `failed` which built-in bounds missed (`checks` says the
    /// rest).
    Fail {
        why: String,
        measured: String,
        request_rate: Option<f64>,
        failed: Breaches,
        checks: Vec<CheckResult>,
    },
}

impl Verdict {
    /// Every value of the check against its bound.
    pub fn checks(&self) -> &[CheckResult] {
        match self {
            Verdict::NoData { checks, .. }
            | Verdict::Pass { checks, .. }
            | Verdict::Fail { checks, .. } => checks,
        }
    }
}

/// One value judged against its bound: as the breakdown records it and as messages say it.
#[derive(Debug, Clone, PartialEq)]
struct Judged {
    result: CheckResult,
    /// The value against its bound, as a check message says it.
    phrase: String,
    /// No data: the kind of reason (`QuietRepeats::key`) and the reason.
    no_data: Option<(&'static str, String)>,
}

impl Judged {
    fn new(result: CheckResult, phrase: String) -> Self {
        Self {
            result,
            phrase,
            no_data: None,
        }
    }

    fn without_data(
        mut result: CheckResult,
        phrase: String,
        key: &'static str,
        why: String,
    ) -> Self {
        result.outcome = CheckOutcome::NoData;
        result.detail = why.clone();
        Self {
            result,
            phrase,
            no_data: Some((key, why)),
        }
    }
}

/// A check result of `kind` named `name`, before its outcome is known.
fn check(
    kind: CheckKind,
    name: &str,
    value: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
) -> CheckResult {
    CheckResult {
        kind,
        name: name.to_owned(),
        value,
        min,
        max,
        outcome: CheckOutcome::Passed,
        detail: String::new(),
    }
}

/// `result` failed, saying `phrase`.
fn failing(mut result: CheckResult, phrase: String) -> Judged {
    result.outcome = CheckOutcome::Failed;
    result.detail = phrase.clone();
    Judged::new(result, phrase)
}

/// The success rate and (with a ceiling) the latency of a measurement, judged. A request rate
/// below the minimum, or a missing, NaN or infinite success rate, leaves both without data; a
/// success rate outside 0..=100 fails. A p99 above the ceiling, NaN or infinite fails; a
/// missing one is no data. `sample` is `Err((key, why))` when there was no measurement.
fn builtin(
    sample: Result<&Sample, (&'static str, String)>,
    settings: &AnalysisSettings,
) -> Vec<Judged> {
    let threshold = settings.success_rate_threshold;
    let ceiling = settings.max_latency_p99_ms;
    let success_check = |value| {
        check(
            CheckKind::SuccessRate,
            "success_rate",
            value,
            Some(threshold),
            None,
        )
    };
    let latency_check = |value| check(CheckKind::Latency, "latency_p99_ms", value, None, ceiling);
    let judged = match sample {
        Err(reason) => Err((reason, None, None)),
        Ok(s) => {
            let rate = s.request_rate.filter(|r| r.is_finite());
            let success = s.success_rate.filter(|v| v.is_finite());
            match (rate, success) {
                (Some(rate), _) if rate < settings.min_request_rate => Err((
                    (
                        "request rate below the minimum",
                        format!(
                            "canary request rate {rate:.2}/s below the minimum {}/s",
                            settings.min_request_rate
                        ),
                    ),
                    success,
                    s.latency_p99_ms,
                )),
                (Some(_), Some(success)) => Ok((success, s.latency_p99_ms)),
                _ => Err((
                    (
                        "no canary traffic",
                        "no canary traffic in the metrics".to_owned(),
                    ),
                    None,
                    None,
                )),
            }
        }
    };
    let (success, p99) = match judged {
        Ok(values) => values,
        Err(((key, why), success, p99)) => {
            let mut out = vec![Judged::without_data(
                success_check(success),
                format!("success rate not judged ({why})"),
                key,
                why.clone(),
            )];
            if let Some(max) = ceiling {
                out.push(Judged::without_data(
                    latency_check(p99),
                    format!("p99 latency not judged (ceiling {max}ms)"),
                    key,
                    why,
                ));
            }
            return out;
        }
    };
    let mut out = vec![if !(0.0..=100.0).contains(&success) {
        failing(
            success_check(Some(success)),
            format!("success rate {success} is out of range"),
        )
    } else if success < threshold {
        failing(
            success_check(Some(success)),
            format!("success rate {success:.2}% below threshold {threshold}%"),
        )
    } else {
        Judged::new(
            success_check(Some(success)),
            format!("success rate {success:.2}% meets {threshold}%"),
        )
    }];
    if let Some(max) = ceiling {
        out.push(match p99 {
            None => Judged::without_data(
                latency_check(None),
                format!("p99 latency unmeasured (ceiling {max}ms)"),
                "no canary latency",
                "no canary latency in the metrics".to_owned(),
            ),
            Some(p99) if !p99.is_finite() => failing(
                latency_check(Some(p99)),
                format!("p99 latency {p99} is not a number of milliseconds"),
            ),
            Some(p99) if p99 > max => failing(
                latency_check(Some(p99)),
                format!("p99 latency {p99:.1}ms above ceiling {max}ms"),
            ),
            Some(p99) => Judged::new(
                latency_check(Some(p99)),
                format!("p99 latency {p99:.1}ms within {max}ms"),
            ),
        });
    }
    out
}

/// A metric template's value judged against its bounds: nothing (no series, NaN, a failed
/// query, a template the server no longer has) is no data; an infinite value fails.
fn metric_judged(check_of: &MetricCheck, value: Option<&Result<Option<f64>, String>>) -> Judged {
    let name = &check_of.template;
    let result = |value| check(CheckKind::Metric, name, value, check_of.min, check_of.max);
    let no_data = |key, why: String| {
        Judged::without_data(result(None), format!("metric {name}: no data"), key, why)
    };
    let value = match value {
        None => {
            return no_data(
                "metric not measured",
                format!("metric {name} was not measured"),
            );
        }
        Some(Err(error)) => {
            return no_data("metric query failed", format!("metric {name}: {error}"));
        }
        Some(Ok(None)) => return no_data("no metric data", format!("no data for metric {name}")),
        Some(Ok(Some(v))) if v.is_nan() => {
            return no_data("no metric data", format!("no data for metric {name}"));
        }
        Some(Ok(Some(v))) => *v,
    };
    if !value.is_finite() {
        return failing(
            result(Some(value)),
            format!("metric {name} {value} is not a finite number"),
        );
    }
    if let Some(min) = check_of.min.filter(|min| value < *min) {
        return failing(
            result(Some(value)),
            format!("metric {name} {} below min {}", number(value), number(min)),
        );
    }
    if let Some(max) = check_of.max.filter(|max| value > *max) {
        return failing(
            result(Some(value)),
            format!("metric {name} {} above max {}", number(value), number(max)),
        );
    }
    Judged::new(
        result(Some(value)),
        format!("metric {name} {} {}", number(value), check_of.bounds()),
    )
}

/// The rollout's webhooks of `kind` judged by their answers: 2xx passes, any other answer or
/// none (a timeout, a refused connection) fails; a hook that was not called has no data.
fn hooks_judged(
    settings: &AnalysisSettings,
    kind: WebhookKind,
    answers: &[HookAnswer],
) -> Vec<Judged> {
    settings
        .hooks(kind)
        .map(|hook| {
            match answers
                .iter()
                .find(|a| a.kind == kind && a.name == hook.name)
            {
                // A 2xx passes, anything else (no answer included) fails: see `HookAnswer`.
                Some(answer) => Judged::new(
                    answer.result(),
                    format!("webhook {}: {}", hook.name, answer.detail()),
                ),
                None => Judged::without_data(
                    check(CheckKind::Webhook, &hook.name, None, None, None),
                    format!("webhook {}: not called", hook.name),
                    "webhook not called",
                    format!("webhook {} was not called", hook.name),
                ),
            }
        })
        .collect()
}

/// The verdict on judged values: a failure of any fails the check (naming every failure);
/// else a value without data makes it no data; else it passes.
fn verdict(judged: Vec<Judged>, request_rate: Option<f64>) -> Verdict {
    let checks: Vec<CheckResult> = judged.iter().map(|j| j.result.clone()).collect();
    let failed_of = |kind| {
        judged
            .iter()
            .any(|j| j.result.kind == kind && j.result.outcome == CheckOutcome::Failed)
    };
    let (failures, others): (Vec<&Judged>, Vec<&Judged>) = judged
        .iter()
        .partition(|j| j.result.outcome == CheckOutcome::Failed);
    let phrases = |list: &[&Judged]| {
        list.iter()
            .map(|j| j.phrase.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !failures.is_empty() {
        let all: Vec<&Judged> = failures.iter().chain(others.iter()).copied().collect();
        return Verdict::Fail {
            why: phrases(&failures),
            measured: phrases(&all),
            request_rate,
            failed: Breaches {
                success_rate: failed_of(CheckKind::SuccessRate),
                latency_p99: failed_of(CheckKind::Latency),
            },
            checks,
        };
    }
    if let Some((key, why)) = judged.iter().find_map(|j| j.no_data.clone()) {
        return Verdict::NoData { key, why, checks };
    }
    Verdict::Pass {
        measured: phrases(&others),
        request_rate,
        checks,
    }
}

/// Judges one measurement against the analysis settings: a pure function, so each metric's
/// thresholds are tested without a provider. A request rate below the minimum, or a missing,
/// NaN or infinite success rate, is no data; a success rate outside 0..=100 fails. With a
/// latency ceiling, a p99 above it fails, a NaN or infinite p99 fails, and a missing p99 is
/// no data (unless the success rate already failed the check).
pub fn evaluate(sample: &Sample, settings: &AnalysisSettings) -> Verdict {
    evaluate_all(Ok(sample), &[], &[], settings)
}

/// Judges a whole check: the measurement (`Err((key, why))` when there was none), each
/// metric template's value, and each rollout webhook's answer. Any failure fails the check;
/// else anything without data makes it no data (never a pass); else it passes.
pub fn evaluate_all(
    sample: Result<&Sample, (&'static str, String)>,
    metric_values: &[(String, Result<Option<f64>, String>)],
    hooks: &[HookAnswer],
    settings: &AnalysisSettings,
) -> Verdict {
    let request_rate = sample
        .as_ref()
        .ok()
        .and_then(|s| s.request_rate)
        .filter(|r| r.is_finite());
    let mut judged = builtin(sample, settings);
    judged.extend(settings.metrics.iter().map(|m| {
        metric_judged(
            m,
            metric_values
                .iter()
                .find(|(name, _)| *name == m.template)
                .map(|(_, v)| v),
        )
    }));
    judged.extend(hooks_judged(settings, WebhookKind::Rollout, hooks));
    verdict(judged, request_rate)
}

/// ` (12.5 req/s)`, or nothing without a request rate.
fn rate_note(request_rate: Option<f64>) -> String {
    request_rate
        .map(|r| format!(" ({r:.1} req/s)"))
        .unwrap_or_default()
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
    check_tick: Duration,
) -> Option<Duration> {
    if state.phase != Phase::Progressing
        || state.canary_weight == 0
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

/// Whether a check is due now: the rollout progresses above weight zero, an interval has
/// passed, the revision has had a metrics window of its own traffic, and nothing holds it
/// back (both Deployments settled and healthy, the canary still the revision analysed, the
/// VirtualService as steerer left it). What `progressing` requires before it judges, so the
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
        && halt_reason("canary", canary, obs.canary_hpa.as_ref()).is_none()
        && halt_reason("GA", ga, obs.ga_hpa.as_ref()).is_none()
}

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
            if state.canary_weight >= settings.max_weight {
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
    route_edit(state, obs).is_none()
        && halt_reason("canary", canary, obs.canary_hpa.as_ref()).is_none()
        && halt_reason("GA", ga, obs.ga_hpa.as_ref()).is_none()
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
fn gate(state: &Rollout, kind: WebhookKind, answers: &[&HookAnswer]) -> Result<String, String> {
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
fn rollback_asked(d: &mut Decision, obs: &Observation, now: DateTime<Utc>) -> bool {
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
fn rollout_confirmed(
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
fn pre_rollout_passed(
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
fn promotion_gate(state: &Rollout, obs: &Observation) -> Result<Option<String>, String> {
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
fn held(
    d: &mut Decision,
    state: &Rollout,
    (message, sample, checks): (String, Sample, Vec<CheckResult>),
    waiting: String,
    now: DateTime<Utc>,
) {
    let repeat = state
        .quiet
        .as_ref()
        .filter(|q| q.key == HELD && q.weight == state.canary_weight);
    let in_a_row = repeat.map_or(1, |q| q.in_a_row + 1);
    let record = match repeat {
        None => true,
        Some(q) => {
            in_a_row <= REPEATS_IN_FULL
                || (now - q.recorded_at).to_std().unwrap_or(Duration::ZERO) >= quiet_window(state)
        }
    };
    if record {
        let note = repeat
            .filter(|q| q.unrecorded > 0)
            .map(|q| {
                format!(
                    " ({} more passing checks since {} not recorded)",
                    q.unrecorded,
                    q.recorded_at.format("%H:%M:%S UTC")
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
        d.next.quiet = Some(QuietRepeats {
            key: HELD.to_owned(),
            weight: state.canary_weight,
            recorded_at: now,
            in_a_row,
            unrecorded: 0,
        });
    } else if let Some(q) = repeat {
        d.next.quiet = Some(QuietRepeats {
            in_a_row,
            unrecorded: q.unrecorded + 1,
            ..q.clone()
        });
    }
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
fn post_rollout_pending(d: &mut Decision, state: &Rollout, obs: &Observation) -> bool {
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

/// The weight the next step of a rollout moves to.
fn next_step(state: &Rollout) -> u32 {
    (state.canary_weight + state.analysis.step_weight)
        .min(state.analysis.max_weight)
        .min(100)
}

/// Whether a canary weight read back from the VirtualService (after a restart) is one this
/// rollout may have written without recording it: its next step, or 0 (a rollback, a
/// promotion's route to GA, a restart of the analysis). Any other weight was set by someone
/// else, and is treated as a hand edit.
pub fn written_unrecorded(state: &Rollout, weight: u32) -> bool {
    weight == 0 || weight == next_step(state)
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
                            "rollout {}: VirtualService {}/{} no longer exists; recreate it and resume, or abort",
                            state.id, state.namespace, state.virtual_service
                        )));
                    }
                    RouteView::Broken(why) => {
                        return Err(Refused(format!(
                            "rollout {}: VirtualService {}/{} no longer splits traffic between GA and canary ({why}); fix it and resume, or abort",
                            state.id, state.namespace, state.virtual_service
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
                        "; the VirtualService as changed outside steerer is adopted ({what})"
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

/// What a rollout that ends without finishing leaves behind, for the person who must clean up.
fn left_as_is(state: &Rollout, obs: &Observation) -> String {
    let traffic = match &obs.route {
        _ if state.traffic_off_canary_at.is_some() || state.phase == Phase::RollingBack => {
            "all traffic had been routed to GA".to_owned()
        }
        RouteView::Split { canary_weight, .. } => {
            format!("the VirtualService routes {canary_weight}% of the traffic to the canary")
        }
        _ => format!(
            "traffic stays where steerer last routed it ({}% to the canary)",
            state.canary_weight
        ),
    };
    let canary = match obs.canary.as_ref().map(|c| c.spec_replicas) {
        Some(n) if n > 0 => format!("canary {} keeps its {n} replicas", state.canary),
        Some(_) => format!("canary {} has no replicas", state.canary),
        None => format!("canary {} no longer exists", state.canary),
    };
    let ga = if state.phase == Phase::Promoting || state.promoted_template.is_some() {
        format!(
            "GA {} has the pod template of revision {} (the promotion had begun)",
            state.target, state.revision
        )
    } else {
        format!("GA {} is unchanged", state.target)
    };
    let doing = match (&state.ending, state.phase) {
        (Some(ending), Phase::RollingBack) => format!("it was rolling back ({}): ", ending.reason),
        _ => String::new(),
    };
    format!("{doing}{traffic}; {canary}; {ga}")
}

fn fail(d: &mut Decision, now: DateTime<Utc>, message: String) {
    d.next.phase = Phase::Failed;
    d.next.finished_at = Some(now);
    d.next.promotion_min_ready = None;
    d.next.promoting_since = None;
    d.next.paused_from = None;
    d.wake = IDLE;
    d.emit(EventKind::Failed, message);
}

/// What an action does, as the object of "could not …".
fn describe(action: &Action) -> String {
    match action {
        Action::SetCanaryWeight(0) => "route all traffic to GA".to_owned(),
        Action::SetCanaryWeight(w) => format!("set the canary weight to {w}%"),
        Action::ScaleCanary(0) => "scale the canary down".to_owned(),
        Action::ScaleCanary(n) => format!("scale the canary to {n} replicas"),
        Action::ScaleGa(n) => format!("scale GA to {n} replicas"),
        Action::ApplyImages => "apply the requested images to the canary".to_owned(),
        Action::PromoteTemplate => "copy the canary's pod template over GA".to_owned(),
    }
}

/// An action failed with an error retrying cannot fix: the rollout ends FAILED, saying what
/// it could not do and what it leaves behind.
fn cannot_act(
    d: &mut Decision,
    state: &Rollout,
    obs: &Observation,
    failure: &ActionFailure,
    now: DateTime<Utc>,
) {
    // An abort whose first write failed keeps its reason (a rollback under way says its
    // own in `left_as_is`): the operator's words survive.
    let during = match (&state.ending, state.phase) {
        (Some(ending), phase) if phase != Phase::RollingBack => format!("{}, but ", ending.reason),
        _ => String::new(),
    };
    fail(
        d,
        now,
        format!(
            "failed: {during}could not {}: {} (retrying cannot fix this); {}",
            describe(&failure.action),
            failure.error,
            left_as_is(state, obs)
        ),
    );
}

/// The VirtualService is gone: traffic can neither be moved nor verified, so the rollout
/// ends FAILED, leaving the canary's pods in place.
fn route_missing(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) {
    fail(
        d,
        now,
        format!(
            "failed: VirtualService {}/{} no longer exists, so steerer can neither move traffic nor tell where it goes; {}; recreate the VirtualService or route the traffic yourself before scaling the canary down",
            state.namespace,
            state.virtual_service,
            left_as_is(state, obs)
        ),
    );
}

/// An abort whose VirtualService is gone or no longer splits traffic: nothing can be routed
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
            "VirtualService {}/{} no longer splits traffic between GA and canary ({why})",
            state.namespace, state.virtual_service
        ),
        _ => format!(
            "VirtualService {}/{} no longer exists",
            state.namespace, state.virtual_service
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

/// What someone else changed in the VirtualService since steerer last wrote it, as a phrase;
/// `None` when it is as steerer left it (or cannot be read).
fn route_edit(state: &Rollout, obs: &Observation) -> Option<String> {
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

/// Takes the VirtualService as it is (a resume after a hand edit): its canary weight and
/// routes become the rollout's. Returns what changed, if anything.
fn adopt_route(
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

/// Halts a rollout whose VirtualService was changed by hand: it is paused, leaving the
/// VirtualService as it is, until an operator resumes (adopting the change) or aborts.
/// Returns whether it paused.
fn paused_for_edit(d: &mut Decision, state: &Rollout, obs: &Observation) -> bool {
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
            "paused: VirtualService {}/{} was changed outside steerer ({what}); steerer leaves it as it is: {next}",
            state.namespace, state.virtual_service
        ),
    );
    true
}

fn pending(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) {
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
    let halt = halt_reason("canary", canary, obs.canary_hpa.as_ref())
        .or_else(|| halt_reason("GA", ga, obs.ga_hpa.as_ref()));
    if let Some(reason) = halt {
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
    let to = next_step(state);
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
fn halted(d: &mut Decision, state: &Rollout, reason: String, now: DateTime<Utc>, delay: Duration) {
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
    d.next.promoted_template = None;
    d.next.quiet = None;
    // The new revision's evidence starts with its own first step, and it passes its own
    // confirmations and pre-rollout webhooks.
    d.next.traffic_since = None;
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

fn progressing(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) {
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
    let halt = halt_reason("canary", canary, obs.canary_hpa.as_ref())
        .or_else(|| halt_reason("GA", ga, obs.ga_hpa.as_ref()));
    if let Some(reason) = halt {
        halted(d, state, reason, now, obs.scale_down_delay);
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
    let verdict = evaluate_all(measurement, &obs.metric_values, &obs.hooks, settings);
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
            let message = format!(
                "check passed at weight {}%: {measured}{}",
                state.canary_weight,
                rate_note(request_rate)
            );
            if state.canary_weight < settings.max_weight {
                d.next.quiet = None;
                d.emit_check(
                    EventKind::CheckPassed,
                    message,
                    Some(sample),
                    checks,
                    Breaches::default(),
                );
                step_up(d, state, now, "check passed".to_owned());
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
                    let why = match confirmed {
                        Some(said) => format!(
                            "analysis passed at the maximum weight and confirm-promotion said yes ({said})"
                        ),
                        None => "analysis passed at the maximum weight".to_owned(),
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

/// A check without evidence: never a pass. Repeats of one reason are recorded in full a few
/// times, then once per `quiet_window` (the state still records every check), so a long
/// outage cannot grow the event log without bound.
fn no_data(
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
        d.emit_check(
            EventKind::CheckNoData,
            format!("{message}{note}"),
            Some(sample),
            checks,
            Breaches::default(),
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
            now,
            delay,
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

fn promoting(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) {
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
                    "waiting for VirtualService {} to split traffic between GA and canary again ({why})",
                    state.virtual_service
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
                    "VirtualService {} was changed outside steerer during the promotion ({what}); the promotion carries on and routes all traffic to GA once GA is ready",
                    state.virtual_service
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

/// All traffic left the canary at `traffic_off_canary_at`. Once the scale-down delay has
/// passed and the VirtualService still sends the canary nothing, scales it down and returns
/// true (the caller ends the rollout). Traffic found on the canary again (someone routed it
/// there) goes back to GA and the delay starts over: the canary is never scaled down while
/// the VirtualService still sends it requests.
fn drained(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) -> bool {
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
                    "VirtualService {} routed {canary_weight}% to the canary again (changed outside steerer); all traffic back on GA, canary {} scaled down {}",
                    state.virtual_service,
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
                    "failed: VirtualService {}/{} no longer splits traffic between GA and canary ({why}), so steerer cannot tell whether the canary still gets traffic and does not scale it down; {}",
                    state.namespace,
                    state.virtual_service,
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

/// Sends all traffic to GA in one write; the canary is scaled down a scale-down delay later.
fn begin_rollback(
    d: &mut Decision,
    phase: Phase,
    reason: String,
    now: DateTime<Utc>,
    delay: Duration,
) {
    d.actions.push(Action::SetCanaryWeight(0));
    d.next.canary_weight = 0;
    d.next.phase = Phase::RollingBack;
    d.next.paused_from = None;
    d.next.traffic_off_canary_at = Some(now);
    d.next.ending = Some(Ending {
        phase,
        reason: reason.clone(),
    });
    d.wake = delay;
    d.emit(
        EventKind::RollingBack,
        format!(
            "rolling back: {reason}; all traffic on GA, canary scaled down {}",
            scaled_down_in(delay)
        ),
    );
}

fn rolling_back(d: &mut Decision, state: &Rollout, obs: &Observation, now: DateTime<Utc>) {
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

/// Why a Deployment cannot take a step now, as a sentence; `None` when it is settled and
/// healthy. `role` is "canary" or "GA".
pub fn halt_reason(role: &str, d: &DeploymentView, hpa: Option<&HpaView>) -> Option<String> {
    if d.observed_generation < d.generation {
        return Some(format!(
            "{role} rolling update in progress, spec change not yet observed by the controller"
        ));
    }
    if d.updated_replicas < d.spec_replicas {
        return Some(format!(
            "{role} rolling update in progress, {} of {} replicas updated",
            d.updated_replicas, d.spec_replicas
        ));
    }
    if d.status_replicas > d.spec_replicas {
        return Some(format!(
            "{role} rolling update in progress, {} old replicas still terminating",
            d.status_replicas - d.spec_replicas
        ));
    }
    if let Some(hpa) = hpa {
        if !hpa.scaling_inactive && hpa.desired_replicas != hpa.current_replicas {
            return Some(format!(
                "HPA {} is scaling the {role} from {} to {} replicas",
                hpa.name, hpa.current_replicas, hpa.desired_replicas
            ));
        }
        if d.spec_replicas != hpa.current_replicas && d.spec_replicas != 0 {
            return Some(format!(
                "HPA {} has not settled on the {role}'s {} replicas yet (it last saw {})",
                hpa.name, d.spec_replicas, hpa.current_replicas
            ));
        }
    }
    if d.unavailable_replicas > 0
        || d.available_replicas < d.spec_replicas
        || d.ready_replicas < d.spec_replicas
    {
        let ready = d.ready_replicas.min(d.available_replicas);
        return Some(format!(
            "{role} has unhealthy pods, {} of {} replicas ready",
            ready, d.spec_replicas
        ));
    }
    None
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
