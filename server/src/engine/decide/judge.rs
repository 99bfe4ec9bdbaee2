//! The judge: one measurement, each metric template's value and each rollout webhook's
//! answer, every one against its bound, and the verdict on the whole check (pass, fail or
//! no data, never a pass without evidence).

use crate::domain::judging::number;
use crate::domain::{
    AnalysisSettings, Breaches, CheckKind, CheckOutcome, CheckResult, HookAnswer, MetricCheck,
    Sample, WebhookKind,
};

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
pub struct Judged {
    result: CheckResult,
    /// The value against its bound, as a check message says it.
    phrase: String,
    /// No data: the kind of reason (`QuietRepeats::key`) and the reason.
    no_data: Option<(&'static str, String)>,
}

impl Judged {
    pub(super) fn new(result: CheckResult, phrase: String) -> Self {
        Self {
            result,
            phrase,
            no_data: None,
        }
    }

    pub(super) fn without_data(
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

    /// The result's detail, when it should say more than the phrase.
    pub(super) fn set_detail(&mut self, detail: String) {
        self.result.detail = detail;
    }

    #[cfg(test)]
    pub(super) fn result(&self) -> &CheckResult {
        &self.result
    }

    #[cfg(test)]
    pub(super) fn phrase(&self) -> &str {
        &self.phrase
    }
}

/// A check result of `kind` named `name`, before its outcome is known.
pub(super) fn check(
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
        baseline: None,
    }
}

/// `result` failed, saying `phrase`.
pub(super) fn failing(mut result: CheckResult, phrase: String) -> Judged {
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
    // With a baseline the absolute threshold is a guard rail the request may set; unset, the
    // baseline judges the success rate alone (and its own minimum of requests says when
    // there is too little traffic).
    let guarded = settings
        .baseline
        .as_ref()
        .is_none_or(|b| b.success_rate_guard);
    if !guarded && ceiling.is_none() {
        return Vec::new();
    }
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
            let mut out = Vec::new();
            if guarded {
                out.push(Judged::without_data(
                    success_check(success),
                    format!("success rate not judged ({why})"),
                    key,
                    why.clone(),
                ));
            }
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
    let mut out = Vec::new();
    if guarded {
        out.push(if !(0.0..=100.0).contains(&success) {
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
        });
    }
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
pub(super) fn hooks_judged(
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
pub(super) fn verdict(judged: Vec<Judged>, request_rate: Option<f64>) -> Verdict {
    let checks: Vec<CheckResult> = judged.iter().map(|j| j.result.clone()).collect();
    // The built-in bounds; a check against the baseline is named on its own.
    let failed_of = |kind| {
        judged.iter().any(|j| {
            j.result.kind == kind
                && j.result.baseline.is_none()
                && j.result.outcome == CheckOutcome::Failed
        })
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
    evaluate_all(Ok(sample), &[], &[], settings, Vec::new())
}

/// Judges a whole check: the measurement (`Err((key, why))` when there was none), the checks
/// against the baseline (judged already, see `against`), each metric template's value, and
/// each rollout webhook's answer. Any failure fails the check; else anything without data
/// makes it no data (never a pass); else it passes.
pub fn evaluate_all(
    sample: Result<&Sample, (&'static str, String)>,
    metric_values: &[(String, Result<Option<f64>, String>)],
    hooks: &[HookAnswer],
    settings: &AnalysisSettings,
    against_baseline: Vec<Judged>,
) -> Verdict {
    let request_rate = sample
        .as_ref()
        .ok()
        .and_then(|s| s.request_rate)
        .filter(|r| r.is_finite());
    let mut judged = against_baseline;
    judged.extend(builtin(sample, settings));
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
pub(super) fn rate_note(request_rate: Option<f64>) -> String {
    request_rate
        .map(|r| format!(" ({r:.1} req/s)"))
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
