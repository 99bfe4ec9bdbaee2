//! The rollout domain: phases, analysis settings, the persisted rollout state and its events,
//! and (in `views`) what the engine sees of the cluster. Free of kube, tonic and the generated
//! types so the engine and its tests stay plain Rust.

pub mod baseline;
#[cfg(test)]
pub mod fixtures;
pub mod judging;
pub mod route;
pub mod strategy;
pub mod views;

pub use baseline::{AgainstBaseline, BaselineMode, BaselineSample, BaselineSettings, SideCounts};
pub use judging::{
    CheckKind, CheckOutcome, CheckResult, Gates, HookAnswer, HookOutcome, MetricCheck, Webhook,
    WebhookKind, failed_names,
};
pub use route::{RouteKind, RouteRef};
pub use strategy::{
    AB_WEIGHT, MatchValue, Matched, Next, RequestMatch, SessionAffinity, Strategy, StrategyRequest,
};
pub use views::{DeploymentView, HpaView, RouteView, promoted_template, template_hash};

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Accepted; the canary is being prepared.
    Pending,
    /// Traffic moves to the canary step by step.
    Progressing,
    /// Held by an operator.
    Paused,
    /// GA is being updated to the canary's template.
    Promoting,
    /// Terminal: GA runs the canary's template.
    Succeeded,
    /// Traffic is on GA; the canary is being scaled down.
    RollingBack,
    /// Terminal: analysis failed or the deadline passed; GA runs the old release.
    RolledBack,
    /// Terminal: aborted by a caller; GA runs the old release.
    Aborted,
    /// Terminal: the rollout could not be carried out.
    Failed,
}

impl Phase {
    /// The phases a rollout ends in; it never changes again.
    pub const TERMINAL: [Phase; 4] = [
        Phase::Succeeded,
        Phase::RolledBack,
        Phase::Aborted,
        Phase::Failed,
    ];

    /// A rollout in a terminal phase never changes again.
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }

    /// Lower-case name for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoting => "promoting",
            Phase::Succeeded => "succeeded",
            Phase::RollingBack => "rolling back",
            Phase::RolledBack => "rolled back",
            Phase::Aborted => "aborted",
            Phase::Failed => "failed",
        }
    }
}

/// Consecutive "no data" checks with the same reason at the same weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietRepeats {
    /// The kind of reason (not its text, whose numbers change from check to check).
    pub key: String,
    pub weight: u32,
    /// When the last of them was recorded as an event.
    pub recorded_at: DateTime<Utc>,
    /// Checks in a row with this reason, recorded or not.
    pub in_a_row: u32,
    /// Of those, how many since `recorded_at` were not recorded.
    pub unrecorded: u32,
}

/// What happened in one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Started,
    Preparing,
    WeightChanged,
    CheckPassed,
    CheckFailed,
    CheckNoData,
    Halted,
    Paused,
    Resumed,
    Promoting,
    Promoted,
    RollingBack,
    RolledBack,
    Aborted,
    Succeeded,
    Failed,
    Restarted,
    /// Webhooks answered in a way worth recording (a confirmation, the post-rollout call).
    Webhook,
}

impl EventKind {
    /// `PascalCase` reason used for Kubernetes Events.
    pub fn reason(self) -> &'static str {
        match self {
            EventKind::Started => "RolloutStarted",
            EventKind::Preparing => "Preparing",
            EventKind::WeightChanged => "WeightChanged",
            EventKind::CheckPassed => "CheckPassed",
            EventKind::CheckFailed => "CheckFailed",
            EventKind::CheckNoData => "CheckNoData",
            EventKind::Halted => "Halted",
            EventKind::Paused => "Paused",
            EventKind::Resumed => "Resumed",
            EventKind::Promoting => "Promoting",
            EventKind::Promoted => "Promoted",
            EventKind::RollingBack => "RollingBack",
            EventKind::RolledBack => "RolledBack",
            EventKind::Aborted => "Aborted",
            EventKind::Succeeded => "Succeeded",
            EventKind::Failed => "Failed",
            EventKind::Restarted => "Restarted",
            EventKind::Webhook => "Webhook",
        }
    }

    /// Events worth a `Warning` Kubernetes Event.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventKind::CheckFailed
                | EventKind::Halted
                | EventKind::RollingBack
                | EventKind::RolledBack
                | EventKind::Aborted
                | EventKind::Failed
        )
    }
}

/// The analysis settings in force for one rollout (request values with defaults filled in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSettings {
    /// How traffic moves to the canary (stored as the fields it always had).
    #[serde(flatten)]
    pub strategy: Strategy,
    /// Time between checks and steps.
    #[serde(with = "millis")]
    pub interval: Duration,
    /// Minimum success rate in percent.
    pub success_rate_threshold: f64,
    /// Failed checks that roll back.
    pub max_failed_checks: u32,
    /// Longest time spent halted before rolling back.
    #[serde(with = "millis")]
    pub progress_deadline: Duration,
    /// Requests per second below which a check has no data.
    pub min_request_rate: f64,
    /// Ceiling for the canary's p99 request duration in milliseconds; `None`: not checked.
    #[serde(default)]
    pub max_latency_p99_ms: Option<f64>,
    /// Checks on operator-defined metric templates, all of which must pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricCheck>,
    /// Webhooks called as the rollout goes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
    /// Hold at the maximum weight until an operator promotes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
    /// Judge the canary against a baseline rather than (or besides) fixed bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Box<BaselineSettings>>,
}

impl AnalysisSettings {
    /// The rollout's webhooks of one kind.
    pub fn hooks(&self, kind: WebhookKind) -> impl Iterator<Item = &Webhook> {
        self.webhooks.iter().filter(move |w| w.kind == kind)
    }

    /// Whether the rollout has a webhook of this kind.
    pub fn has_hooks(&self, kind: WebhookKind) -> bool {
        self.hooks(kind).next().is_some()
    }
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            interval: Duration::from_secs(60),
            success_rate_threshold: 99.0,
            max_failed_checks: 5,
            progress_deadline: Duration::from_secs(600),
            min_request_rate: 1.0,
            max_latency_p99_ms: None,
            metrics: Vec::new(),
            webhooks: Vec::new(),
            require_approval: false,
            baseline: None,
        }
    }
}

/// A canary measurement: both values absent when Prometheus had nothing for the canary.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Sample {
    /// HTTP success rate in percent.
    pub success_rate: Option<f64>,
    /// Requests per second.
    pub request_rate: Option<f64>,
    /// p99 request duration in milliseconds; measured only when the rollout has a ceiling.
    #[serde(default)]
    pub latency_p99_ms: Option<f64>,
}

/// The metrics of a check that missed their bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Breaches {
    /// The success rate was below the threshold or out of range.
    #[serde(default)]
    pub success_rate: bool,
    /// The p99 latency was above the ceiling, or not a number.
    #[serde(default)]
    pub latency_p99: bool,
}

impl Breaches {
    /// Names of the missed bounds, as the API reports them.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.success_rate {
            names.push("success_rate".to_owned());
        }
        if self.latency_p99 {
            names.push("latency_p99_ms".to_owned());
        }
        names
    }
}

/// The last analysis check of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRecord {
    pub sample: Sample,
    pub time: DateTime<Utc>,
    /// Which built-in bounds the check missed (none when it passed or had no data).
    #[serde(default)]
    pub failed: Breaches,
    /// Every value the check measured against its bound, and every webhook answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
}

/// How a rollback ends: the terminal phase it reaches and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ending {
    pub phase: Phase,
    pub reason: String,
}

/// The durable state of one rollout: everything a restarted server needs to carry on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub namespace: String,
    pub target: String,
    pub canary: String,
    /// The object that splits the traffic (stored as its fields always were, see `RouteRef`).
    #[serde(flatten)]
    pub route: RouteRef,
    /// The observer whose series judge it (a name of `metrics::observer::OBSERVERS`). Records
    /// written before observers could be chosen were all judged by Istio's.
    #[serde(default = "observer_of_old_records")]
    pub observer: String,
    /// Pod-template hash of the canary revision under analysis (empty until the canary is ready).
    pub revision: String,
    pub phase: Phase,
    pub canary_weight: u32,
    pub failed_checks: u32,
    /// Passing checks of the revision under analysis: what an A/B test counts to its
    /// `iterations` (records from before A/B tests have none).
    #[serde(default)]
    pub passed_checks: u32,
    pub analysis: AnalysisSettings,
    pub last_analysis: Option<AnalysisRecord>,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_sequence: u64,
    pub request_id: String,
    pub images: BTreeMap<String, String>,
    /// Replicas for a canary found at zero (None = GA's count).
    pub canary_replicas: Option<u32>,
    /// The canary was scaled up and its images applied.
    #[serde(default)]
    pub prepared: bool,
    /// When the weight last moved or a check last ran.
    #[serde(default)]
    pub last_step_at: Option<DateTime<Utc>>,
    /// Since when the rollout has been unable to progress (halted or without data).
    #[serde(default)]
    pub halted_since: Option<DateTime<Utc>>,
    /// The reason of the current halt, so a repeated reason is not re-announced.
    #[serde(default)]
    pub halt_reason: Option<String>,
    /// The phase a paused rollout returns to.
    #[serde(default)]
    pub paused_from: Option<Phase>,
    /// Ready GA replicas required before traffic returns to GA at promotion.
    #[serde(default)]
    pub promotion_min_ready: Option<u32>,
    /// Terminal phase and reason of a rollback under way.
    #[serde(default)]
    pub ending: Option<Ending>,
    /// When the current promotion began; the progress deadline bounds it too.
    #[serde(default)]
    pub promoting_since: Option<DateTime<Utc>>,
    /// The no-data reason last recorded as an event, so that its repeats are recorded
    /// sparingly rather than once per interval.
    #[serde(default)]
    pub quiet: Option<QuietRepeats>,
    /// When the revision under analysis first got traffic (the commit time of the step that
    /// first gave it a weight above zero; the time of resumption when a restarted server
    /// does not know it). Metrics older than this belong to another revision.
    #[serde(default)]
    pub traffic_since: Option<DateTime<Utc>>,
    /// Fingerprint of the route's split (destinations and match conditions, weights left
    /// out) as the rollout found or last adopted it: a different one means someone edited
    /// the route by hand.
    #[serde(default)]
    pub route_fingerprint: Option<String>,
    /// Hash of the pod template written over GA when the promotion began: from then on GA is
    /// rolling out the canary's release, whatever happens to the canary.
    #[serde(default)]
    pub promoted_template: Option<String>,
    /// When all traffic left the canary for good (the promotion's or the rollback's route to
    /// GA). The canary is scaled down a scale-down delay later; a restarted server waits out
    /// the rest of the delay.
    #[serde(default)]
    pub traffic_off_canary_at: Option<DateTime<Utc>>,
    /// Checks judged against the baseline so far for the revision under analysis (checks
    /// without data not counted): the next is look `baseline_looks + 1`, held to that look's
    /// share of 1 − confidence. Persisted so a restarted server spends no budget twice.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub baseline_looks: u32,
    /// Who started it (the authenticated caller).
    #[serde(default)]
    pub created_by: String,
    /// The confirmations and one-off webhooks passed, and what the rollout waits for.
    #[serde(default)]
    pub gates: Gates,
}

impl Rollout {
    /// A rollout that has not begun: pending at weight 0, nothing prepared, observed or
    /// recorded yet. The one place a `Rollout` is built from nothing; the first state of a
    /// real rollout comes from `engine::decide::start`.
    pub fn new(
        id: String,
        namespace: String,
        target: String,
        canary: String,
        route: RouteRef,
        analysis: AnalysisSettings,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            namespace,
            target,
            canary,
            route,
            observer: observer_of_old_records(),
            revision: String::new(),
            passed_checks: 0,
            phase: Phase::Pending,
            canary_weight: 0,
            failed_checks: 0,
            analysis,
            last_analysis: None,
            message: String::new(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            last_sequence: 0,
            request_id: String::new(),
            images: BTreeMap::new(),
            canary_replicas: None,
            prepared: false,
            last_step_at: None,
            halted_since: None,
            halt_reason: None,
            paused_from: None,
            promotion_min_ready: None,
            ending: None,
            promoting_since: None,
            quiet: None,
            traffic_since: None,
            route_fingerprint: None,
            promoted_template: None,
            traffic_off_canary_at: None,
            baseline_looks: 0,
            created_by: String::new(),
            gates: Gates::default(),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The observer of a record that names none: the only one there was when it was written.
fn observer_of_old_records() -> String {
    crate::metrics::observer::istio::NAME.to_owned()
}

/// One step of a rollout, as stored and streamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvent {
    pub rollout_id: String,
    pub sequence: u64,
    pub time: DateTime<Utc>,
    pub kind: EventKind,
    pub phase: Phase,
    pub canary_weight: u32,
    pub success_rate: Option<f64>,
    pub request_rate: Option<f64>,
    pub failed_checks: u32,
    pub message: String,
    #[serde(default)]
    pub latency_p99_ms: Option<f64>,
    /// On a failed check, the built-in bounds it missed.
    #[serde(default)]
    pub failed: Breaches,
    /// On check (and webhook) events, every value measured against its bound and every
    /// webhook answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
}

impl RolloutEvent {
    /// The checks this event says missed their bound.
    pub fn failed_names(&self) -> Vec<String> {
        failed_names(&self.failed, &self.checks)
    }
}

impl AnalysisRecord {
    /// The checks this record says missed their bound.
    pub fn failed_names(&self) -> Vec<String> {
        failed_names(&self.failed, &self.checks)
    }
}

/// Serde for durations as whole milliseconds, readable in the stored JSON.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_record_written_before_observers_could_be_chosen_is_judged_by_istio() {
        let mut rollout = super::Rollout::test();
        rollout.observer = "linkerd".into();
        let mut stored = serde_json::to_value(&rollout).unwrap();
        assert_eq!(stored["observer"], "linkerd");
        let loaded: super::Rollout = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(loaded, rollout);
        stored.as_object_mut().unwrap().remove("observer");
        let old: super::Rollout = serde_json::from_value(stored).unwrap();
        assert_eq!(old.observer, "istio");
    }

    #[test]
    fn the_baseline_and_its_looks_survive_the_record_and_older_records_have_neither() {
        let mut rollout = super::Rollout::test();
        rollout.analysis.baseline = Some(Box::new(super::BaselineSettings {
            confidence: 0.95,
            success_rate_guard: true,
            ..super::BaselineSettings::ga()
        }));
        rollout.baseline_looks = 7;
        let stored = serde_json::to_value(&rollout).unwrap();
        assert_eq!(stored["baseline_looks"], 7);
        assert_eq!(stored["analysis"]["baseline"]["mode"], "Ga");
        let loaded: super::Rollout = serde_json::from_value(stored).unwrap();
        assert_eq!(loaded, rollout);
        let plain = serde_json::to_value(super::Rollout::test()).unwrap();
        assert!(plain.get("baseline_looks").is_none());
        assert!(plain["analysis"].get("baseline").is_none());
        let old: super::Rollout = serde_json::from_value(plain).unwrap();
        assert_eq!((old.baseline_looks, old.analysis.baseline), (0, None));
    }
}
