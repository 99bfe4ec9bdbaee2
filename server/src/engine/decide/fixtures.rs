//! Test fixtures of the rules, on top of the domain's: the Deployments the rollout sees, the
//! rollout in the phases the rules start from, and observations built by chaining
//! (`Observation::test().measured(100.0, 20.0).routing(30)`).

use std::time::Duration;

use crate::domain::{
    DeploymentView, Ending, EventKind, HookAnswer, HookOutcome, MetricCheck, Phase, Rollout,
    RouteView, Sample, WebhookKind, promoted_template, template_hash,
};
use crate::workloads::fake::FakeWorkloads;

pub use crate::domain::fixtures::t;

use super::{Command, Decision, Observation};

/// The minimum metrics window of the evidence tests.
pub const WINDOW: Duration = Duration::from_secs(4);

pub fn ms(millis: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(millis)
}

/// GA, settled with 3 replicas of podinfo:1.
pub fn ga() -> DeploymentView {
    FakeWorkloads::settled("test", "podinfo", 3, "podinfo:1")
}

/// The canary, settled with 3 replicas of podinfo:2.
pub fn canary() -> DeploymentView {
    FakeWorkloads::settled("test", "podinfo-canary", 3, "podinfo:2")
}

/// GA once it was given the canary's pod template (with its own selector labels).
pub fn promoted_ga() -> DeploymentView {
    let mut g = ga();
    let c = canary();
    g.template = promoted_template(&c.template, &c.selector, &g.selector).into();
    g
}

/// The kinds of the events a decision records, in order.
pub fn kinds(d: &Decision) -> Vec<EventKind> {
    d.events.iter().map(|e| e.kind).collect()
}

pub fn abort(reason: &str) -> Command {
    Command::Abort {
        reason: reason.into(),
    }
}

/// The route splitting `weight` percent to the canary, its routes as the fixture has them.
pub fn routed(weight: u32) -> RouteView {
    RouteView::Split {
        canary_weight: weight,
        fingerprint: "routes".into(),
    }
}

/// A webhook's answer with this HTTP status.
pub fn answered(name: &str, kind: WebhookKind, status: u16) -> HookAnswer {
    HookAnswer {
        name: name.into(),
        kind,
        outcome: HookOutcome::Answered {
            status,
            body: String::new(),
        },
    }
}

/// A webhook that did not answer, for this reason.
pub fn unanswered(name: &str, kind: WebhookKind, why: &str) -> HookAnswer {
    HookAnswer {
        name: name.into(),
        kind,
        outcome: HookOutcome::Failed(why.into()),
    }
}

/// A check on the metric template `template`.
pub fn metric(template: &str, min: Option<f64>, max: Option<f64>) -> MetricCheck {
    MetricCheck {
        template: template.into(),
        min,
        max,
    }
}

impl Rollout {
    /// Progressing at `weight`, the last step at `t(last_step)`, with the canary's revision
    /// under analysis and traffic long enough for its checks to be due.
    pub fn progressing(mut self, weight: u32, last_step: i64) -> Self {
        self.prepared = true;
        self.phase = Phase::Progressing;
        self.revision = canary().revision();
        self.canary_weight = weight;
        self.last_step_at = Some(t(last_step));
        self.traffic_since = Some(t(-3600));
        self
    }

    /// Promoting since `t(0)`: GA was given the canary's template and needs 3 ready replicas.
    pub fn promoting(self) -> Self {
        self.progressing(100, 0).with(|r| {
            r.phase = Phase::Promoting;
            r.promotion_min_ready = Some(3);
            r.promoting_since = Some(t(0));
            r.promoted_template = Some(template_hash(&promoted_ga().template));
        })
    }

    /// Rolling back an abort, all traffic off the canary since `t(traffic_off)` (unknown when
    /// `None`).
    pub fn rolling_back(self, traffic_off: Option<i64>) -> Self {
        self.progressing(0, 0).with(|r| {
            r.phase = Phase::RollingBack;
            r.traffic_off_canary_at = traffic_off.map(t);
            r.ending = Some(Ending {
                phase: Phase::Aborted,
                reason: "aborted: bad".into(),
            });
        })
    }

    /// Pending, with a confirm-rollout webhook `approve` and a rollback webhook `kill`.
    pub fn awaiting_confirmation(self) -> Self {
        self.with_hooks(&[
            ("approve", WebhookKind::ConfirmRollout),
            ("kill", WebhookKind::Rollback),
        ])
    }

    /// Prepared, with a pre-rollout webhook `load`.
    pub fn ready_with_load_test(self) -> Self {
        self.prepared()
            .with_hooks(&[("load", WebhookKind::PreRollout)])
    }
}

impl Observation {
    /// Both Deployments settled, nothing measured, the route unknown.
    pub fn test() -> Self {
        Observation {
            ga: Some(ga()),
            canary: Some(canary()),
            ..Default::default()
        }
    }

    /// With a measurement of this success rate (percent) and request rate (per second).
    pub fn measured(self, success: f64, rate: f64) -> Self {
        self.sampled(Some(success), Some(rate), None)
    }

    /// With a measurement of this success rate and p99 latency, at 20 requests a second.
    pub fn timed(self, success: f64, p99: Option<f64>) -> Self {
        self.sampled(Some(success), Some(20.0), p99)
    }

    fn sampled(self, success: Option<f64>, rate: Option<f64>, p99: Option<f64>) -> Self {
        Observation {
            sample: Some(Ok(Sample {
                success_rate: success,
                request_rate: rate,
                latency_p99_ms: p99,
            })),
            ..self
        }
    }

    /// With the route splitting `weight` percent to the canary.
    pub fn routing(self, weight: u32) -> Self {
        Observation {
            route: routed(weight),
            ..self
        }
    }

    /// With a 30 s scale-down delay.
    pub fn delayed(self) -> Self {
        Observation {
            scale_down_delay: Duration::from_secs(30),
            ..self
        }
    }

    /// With the `WINDOW` metrics window.
    pub fn windowed(self) -> Self {
        Observation {
            metrics_window: WINDOW,
            ..self
        }
    }

    /// With these webhook answers.
    pub fn answering(self, hooks: Vec<HookAnswer>) -> Self {
        Observation { hooks, ..self }
    }

    /// With these metric template values, by name.
    pub fn with_metrics(self, values: &[(&str, Result<Option<f64>, String>)]) -> Self {
        Observation {
            metric_values: values
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect(),
            ..self
        }
    }
}
