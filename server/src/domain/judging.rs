//! What a canary is judged on besides its success rate and latency: checks on operator-defined
//! metric templates, webhooks and their answers, the per-check breakdown every check records,
//! and the gates a rollout waits at (confirmations, approval).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Breaches;

/// A check on an operator-defined metric template: its value must lie within the bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricCheck {
    /// Name of a template the server knows.
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl MetricCheck {
    /// The bounds as a person reads them: `>= 1`, `<= 0.5`, `in [1, 5]`.
    pub fn bounds(&self) -> String {
        match (self.min, self.max) {
            (Some(min), Some(max)) => format!("in [{}, {}]", number(min), number(max)),
            (Some(min), None) => format!(">= {}", number(min)),
            (None, Some(max)) => format!("<= {}", number(max)),
            (None, None) => "unbounded".to_owned(),
        }
    }
}

/// When a webhook is called and what its answer does (Flagger's webhook types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookKind {
    /// Gates the start until it answers 2xx.
    ConfirmRollout,
    /// Once before traffic moves; a non-2xx answer fails a check.
    PreRollout,
    /// With every check; a non-2xx answer fails the check.
    Rollout,
    /// At the maximum weight: holds the promotion until it answers 2xx.
    ConfirmPromotion,
    /// Once when all traffic has left the canary for good; informational.
    PostRollout,
    /// With every check: a 2xx answer rolls back.
    Rollback,
}

impl WebhookKind {
    /// The name people know it by.
    pub fn name(self) -> &'static str {
        match self {
            WebhookKind::ConfirmRollout => "confirm-rollout",
            WebhookKind::PreRollout => "pre-rollout",
            WebhookKind::Rollout => "rollout",
            WebhookKind::ConfirmPromotion => "confirm-promotion",
            WebhookKind::PostRollout => "post-rollout",
            WebhookKind::Rollback => "rollback",
        }
    }

    /// The name in the request body's `type` field, as the API spells it.
    pub fn api_name(self) -> &'static str {
        match self {
            WebhookKind::ConfirmRollout => "CONFIRM_ROLLOUT",
            WebhookKind::PreRollout => "PRE_ROLLOUT",
            WebhookKind::Rollout => "ROLLOUT",
            WebhookKind::ConfirmPromotion => "CONFIRM_PROMOTION",
            WebhookKind::PostRollout => "POST_ROLLOUT",
            WebhookKind::Rollback => "ROLLBACK",
        }
    }
}

/// Default time a webhook has to answer.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// A webhook of a rollout, validated (its URL allowed by the server when it was started).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: WebhookKind,
    pub url: String,
    #[serde(with = "super::millis")]
    pub timeout: Duration,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// How a webhook answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// An HTTP answer: its status and the start of its body (for a person).
    Answered { status: u16, body: String },
    /// No answer: a timeout, a refused connection, a URL no longer allowed.
    Failed(String),
}

/// One webhook's answer, as the driver got it just before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookAnswer {
    pub name: String,
    pub kind: WebhookKind,
    pub outcome: HookOutcome,
}

impl HookAnswer {
    /// A 2xx answer: a yes. Everything else, no answer included, is a no.
    pub fn passed(&self) -> bool {
        matches!(self.outcome, HookOutcome::Answered { status, .. } if (200..300).contains(&status))
    }

    /// The answer for a person: `HTTP 200`, `HTTP 503: overloaded`, `timed out after 10s`.
    pub fn detail(&self) -> String {
        match &self.outcome {
            HookOutcome::Answered { status, body } if body.is_empty() || self.passed() => {
                format!("HTTP {status}")
            }
            HookOutcome::Answered { status, body } => format!("HTTP {status}: {body}"),
            HookOutcome::Failed(why) => why.clone(),
        }
    }

    /// The answer as one entry of a check's breakdown.
    pub fn result(&self) -> CheckResult {
        CheckResult {
            kind: CheckKind::Webhook,
            name: self.name.clone(),
            value: None,
            min: None,
            max: None,
            outcome: if self.passed() {
                CheckOutcome::Passed
            } else {
                CheckOutcome::Failed
            },
            detail: self.detail(),
            baseline: None,
        }
    }
}

/// What a check result measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckKind {
    SuccessRate,
    Latency,
    Metric,
    Webhook,
}

/// How one value fared against its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckOutcome {
    Passed,
    Failed,
    /// Nothing to judge (no traffic, no series, a failed query): never a pass.
    NoData,
}

/// One value of a check against its bound, or one webhook's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub kind: CheckKind,
    /// `success_rate`, `latency_p99_ms`, a template's name or a webhook's name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    pub outcome: CheckOutcome,
    /// Why it failed or had no data, or the webhook's answer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Judged against the baseline: what it found there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<super::AgainstBaseline>,
}

/// The names of the checks that missed their bound: the built-in metrics `failed` names,
/// then the checks against the baseline, metric templates and webhooks that failed, in the
/// order checked.
pub fn failed_names(failed: &Breaches, checks: &[CheckResult]) -> Vec<String> {
    let mut names = failed.names();
    names.extend(
        checks
            .iter()
            .filter(|c| {
                c.outcome == CheckOutcome::Failed
                    && (c.baseline.is_some()
                        || matches!(c.kind, CheckKind::Metric | CheckKind::Webhook))
            })
            .map(|c| c.name.clone()),
    );
    names
}

/// Where a rollout stands with its gates, kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Gates {
    /// Every confirm-rollout webhook answered 2xx: the rollout may start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollout_confirmed: bool,
    /// Every pre-rollout webhook answered 2xx: traffic may move.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre_rollout_passed: bool,
    /// The post-rollout webhooks were called (whatever they answered).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub post_rollout_sent: bool,
    /// What the rollout holds for, for a person ("approval: call PromoteRollout"); `None`
    /// when it waits for nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

pub use steerer::format::number;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_2xx_answer_is_a_yes() {
        let answer = |outcome| HookAnswer {
            name: "gate".into(),
            kind: WebhookKind::ConfirmPromotion,
            outcome,
        };
        let ok = answer(HookOutcome::Answered {
            status: 204,
            body: "ignored".into(),
        });
        assert!(ok.passed());
        assert_eq!(ok.detail(), "HTTP 204");
        let no = answer(HookOutcome::Answered {
            status: 302,
            body: String::new(),
        });
        assert!(!no.passed());
        let refused = answer(HookOutcome::Answered {
            status: 503,
            body: "busy".into(),
        });
        assert_eq!(refused.detail(), "HTTP 503: busy");
        assert_eq!(refused.result().outcome, CheckOutcome::Failed);
        let timeout = answer(HookOutcome::Failed("timed out after 1s".into()));
        assert!(!timeout.passed());
        assert_eq!(timeout.result().detail, "timed out after 1s");
    }

    #[test]
    fn failed_names_list_the_built_in_metrics_then_templates_and_webhooks() {
        let result = |kind, name: &str, outcome| CheckResult {
            kind,
            name: name.into(),
            value: None,
            min: None,
            max: None,
            outcome,
            detail: String::new(),
            baseline: None,
        };
        let checks = [
            result(CheckKind::SuccessRate, "success_rate", CheckOutcome::Failed),
            result(CheckKind::Metric, "error-ratio", CheckOutcome::Failed),
            result(CheckKind::Metric, "queue-depth", CheckOutcome::NoData),
            result(CheckKind::Webhook, "smoke", CheckOutcome::Failed),
            result(CheckKind::Webhook, "gate", CheckOutcome::Passed),
        ];
        let failed = Breaches {
            success_rate: true,
            latency_p99: false,
        };
        assert_eq!(
            failed_names(&failed, &checks),
            ["success_rate", "error-ratio", "smoke"]
        );
    }

    #[test]
    fn bounds_read_as_a_person_would_write_them() {
        let check = |min, max| MetricCheck {
            template: "t".into(),
            min,
            max,
        };
        assert_eq!(check(Some(1.0), None).bounds(), ">= 1");
        assert_eq!(check(None, Some(0.25)).bounds(), "<= 0.25");
        assert_eq!(check(Some(1.0), Some(5.5)).bounds(), "in [1, 5.5]");
    }
}
