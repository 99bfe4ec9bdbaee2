//! A check against the baseline: the counts of both sides since the analysis started, judged
//! by `stats::baseline` at this look's level, turned into the check results and the phrases
//! events say (`errors 2.9% vs 0.1% baseline (+2.8 pts, 99% CI +1.9..+3.7, p=0.0004) FAILED`).

use super::judge::{Judged, check, failing};
use crate::domain::{AgainstBaseline, BaselineSample, BaselineSettings, CheckKind, SideCounts};
use crate::stats::baseline::{Finding, Side, Test, Verdict, judge};
use crate::stats::ranks::{Histogram, tail_bounds};

/// What the baseline judge made of one check.
pub(super) struct Against {
    /// The baseline checks, or one without data.
    pub judged: Vec<Judged>,
    /// Both sides had enough requests and the tests ran: this look spent its share of the
    /// budget, and the next look is held to a stricter level.
    pub looked: bool,
}

/// Judges `sample` (`None`: not measured; `Err`: the query failed) as look number `look`.
pub(super) fn against(
    sample: Option<&Result<BaselineSample, String>>,
    settings: &BaselineSettings,
    look: u32,
) -> Against {
    let no_data = |key: &'static str, why: String| Against {
        judged: vec![Judged::without_data(
            check(CheckKind::SuccessRate, ERRORS, None, None, None),
            format!("errors not judged against the baseline ({why})"),
            key,
            why,
        )],
        looked: false,
    };
    let sample = match sample {
        None => return no_data("no measurement", "no measurement".to_owned()),
        Some(Err(error)) => {
            return no_data(
                "metrics unavailable",
                format!("baseline metrics unavailable: {error}"),
            );
        }
        Some(Ok(sample)) => sample,
    };
    let canary = side(&sample.canary);
    let baseline = side(&sample.baseline);
    let verdict = judge(&canary, &baseline, &settings.stats(), look);
    let findings = match verdict {
        Verdict::NoData { canary, baseline } => {
            return no_data(
                "too few requests for the baseline judge",
                format!(
                    "{canary} canary and {baseline} baseline requests since the analysis started; {} each needed",
                    settings.min_requests
                ),
            );
        }
        Verdict::Judged { findings, .. } => findings,
    };
    let judged = findings
        .iter()
        .map(|f| finding_judged(f, &canary, &baseline, sample, settings, look))
        .collect();
    Against {
        judged,
        looked: true,
    }
}

/// The check names of the baseline judge's tests.
const ERRORS: &str = "error_rate";
const LATENCY_SHIFT: &str = "latency_shift";
const LATENCY_TAIL: &str = "latency_tail";

/// One side's counts as the statistics take them: whole requests, failures at most the
/// requests, a histogram when the buckets make one with requests in it.
fn side(counts: &SideCounts) -> Side {
    let whole = |v: f64| {
        if v.is_finite() && v > 0.0 {
            v.round() as u64
        } else {
            0
        }
    };
    let requests = whole(counts.requests);
    Side {
        requests,
        failures: whole(counts.failures).min(requests),
        latency: Histogram::from_cumulative(counts.buckets.clone())
            .ok()
            .filter(|h| h.total() > 0),
    }
}

fn finding_judged(
    f: &Finding,
    canary: &Side,
    baseline: &Side,
    sample: &BaselineSample,
    settings: &BaselineSettings,
    look: u32,
) -> Judged {
    let c = f.comparison;
    let ci = format!("{}% CI", percent(settings.confidence));
    let verdict = if f.failed { "FAILED" } else { "passed" };
    let (kind, name, value, base, phrase, query) = match f.test {
        Test::Errors => {
            let rate = |s: &Side| s.failures as f64 / s.requests.max(1) as f64 * 100.0;
            let (cv, bv) = (rate(canary), rate(baseline));
            (
                CheckKind::SuccessRate,
                ERRORS,
                cv,
                bv,
                format!(
                    "errors {cv:.1}% vs {bv:.1}% baseline ({} pts, {ci} {}..{}, {}) {verdict}",
                    signed(c.effect, 1),
                    signed(c.low, 1),
                    signed(c.high, 1),
                    p_value(c.p_value)
                ),
                &sample.requests_query,
            )
        }
        Test::LatencyShift => {
            let median = |s: &Side| {
                s.latency
                    .as_ref()
                    .and_then(|h| h.quantile_bound(0.5))
                    .unwrap_or(f64::NAN)
            };
            let (cv, bv) = (median(canary), median(baseline));
            (
                CheckKind::Latency,
                LATENCY_SHIFT,
                cv,
                bv,
                format!(
                    "latency median ≤{} vs ≤{} baseline ({}, {ci} {}..{}, {}) {verdict}",
                    millis(cv),
                    millis(bv),
                    signed_percent(c.effect),
                    signed_percent(c.low),
                    signed_percent(c.high),
                    p_value(c.p_value)
                ),
                &sample.latency_query,
            )
        }
        Test::LatencyTail => {
            let bounds = baseline
                .latency
                .as_ref()
                .and_then(|h| tail_bounds(h, settings.max_latency_increase));
            let share = |s: &Side, bound: Option<f64>| {
                s.latency
                    .as_ref()
                    .zip(bound)
                    .map_or(f64::NAN, |(h, b)| h.share_above(b) * 100.0)
            };
            let cv = share(canary, bounds.map(|b| b.1));
            let bv = share(baseline, bounds.map(|b| b.0));
            let above = bounds.map_or_else(String::new, |(p95, threshold)| {
                format!(
                    " above {} (baseline p95 {})",
                    millis(threshold),
                    millis(p95)
                )
            });
            (
                CheckKind::Latency,
                LATENCY_TAIL,
                cv,
                bv,
                format!(
                    "slow requests {cv:.1}% vs {bv:.1}% baseline{above} ({} pts, {ci} {}..{}, {}) {verdict}",
                    signed(c.effect, 1),
                    signed(c.low, 1),
                    signed(c.high, 1),
                    p_value(c.p_value)
                ),
                &sample.latency_query,
            )
        }
    };
    let finite = |v: f64| v.is_finite().then_some(v);
    let mut result = check(kind, name, finite(value), None, None);
    result.baseline = Some(AgainstBaseline {
        value: finite(base),
        p_value: finite(c.p_value),
        effect: finite(c.effect),
        effect_low: finite(c.low),
        effect_high: finite(c.high),
        query: query.clone(),
    });
    if f.failed {
        let mut judged = failing(result, phrase.clone());
        judged.set_detail(format!(
            "{phrase}: look {look} of the rollout, held to p < {}",
            two_figures(f.alpha)
        ));
        judged
    } else {
        // Passed checks carry the phrase too: clients show it as the check's line.
        result.detail = phrase.clone();
        Judged::new(result, phrase)
    }
}

/// `99` for 0.99, `99.9` for 0.999.
fn percent(fraction: f64) -> String {
    crate::domain::judging::number((fraction * 1000.0).round() / 10.0)
}

/// `+2.8`, `-0.3`, `+0.0` (never `-0.0`).
fn signed(value: f64, decimals: usize) -> String {
    let text = format!("{value:+.decimals$}");
    if text.starts_with('-') && text[1..].chars().all(|c| c == '0' || c == '.') {
        format!("+{}", &text[1..])
    } else {
        text
    }
}

/// `+21%` for a relative 0.21 (never `-0%`).
fn signed_percent(value: f64) -> String {
    format!("{}%", signed(value * 100.0, 0))
}

/// `120ms`, `1.5ms`, `+Inf`.
fn millis(value: f64) -> String {
    if value.is_finite() {
        format!("{}ms", crate::domain::judging::number(value))
    } else {
        "?".to_owned()
    }
}

/// `0.0061` for 0.006079: two significant figures.
fn two_figures(value: f64) -> String {
    if !(value.is_finite() && value > 0.0) {
        return value.to_string();
    }
    let decimals = (1 - value.log10().floor() as i32).max(0) as usize;
    format!("{value:.decimals$}")
}

/// `p=0.31`, `p=0.0004`, `p<0.0001`.
fn p_value(p: f64) -> String {
    if p >= 0.01 {
        format!("p={p:.2}")
    } else if p >= 0.0001 {
        format!("p={p:.4}")
    } else {
        "p<0.0001".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: f64, failures: f64) -> SideCounts {
        SideCounts {
            requests,
            failures,
            buckets: Vec::new(),
        }
    }

    fn sample(canary: SideCounts, baseline: SideCounts) -> Result<BaselineSample, String> {
        Ok(BaselineSample {
            canary,
            baseline,
            requests_query: "increase(requests)".into(),
            latency_query: "increase(buckets)".into(),
        })
    }

    #[test]
    fn three_percent_errors_against_none_fail_naming_the_baseline_the_interval_and_p() {
        let s = sample(counts(1000.0, 30.0), counts(1000.0, 0.0));
        let a = against(Some(&s), &BaselineSettings::ga(), 1);
        assert!(a.looked);
        let [errors] = a.judged.as_slice() else {
            panic!("one check without histograms")
        };
        let r = errors.result();
        assert_eq!(r.name, "error_rate");
        assert_eq!(r.outcome, crate::domain::CheckOutcome::Failed);
        assert_eq!(r.value, Some(3.0));
        let b = r.baseline.clone().expect("against the baseline");
        assert_eq!(b.value, Some(0.0));
        assert_eq!(b.query, "increase(requests)");
        assert!(b.effect_low.expect("low") > 0.5, "{b:?}");
        assert!(b.p_value.expect("p") < 0.001, "{b:?}");
        assert!(
            errors
                .phrase()
                .starts_with("errors 3.0% vs 0.0% baseline (+3.0 pts, 99% CI +"),
            "{}",
            errors.phrase()
        );
        assert!(errors.phrase().ends_with("FAILED"), "{}", errors.phrase());
        assert!(r.detail.contains("look 1 of the rollout"), "{}", r.detail);
    }

    #[test]
    fn too_few_requests_on_a_side_are_no_data_and_spend_no_look() {
        let s = sample(counts(150.0, 0.0), counts(5000.0, 0.0));
        let a = against(Some(&s), &BaselineSettings::ga(), 1);
        assert!(!a.looked);
        assert_eq!(
            a.judged[0].result().outcome,
            crate::domain::CheckOutcome::NoData
        );
        assert!(
            a.judged[0]
                .result()
                .detail
                .contains("150 canary and 5000 baseline")
        );
        let failed = Err("connection refused".to_owned());
        assert!(!against(Some(&failed), &BaselineSettings::ga(), 1).looked);
        assert!(!against(None, &BaselineSettings::ga(), 1).looked);
    }

    #[test]
    fn a_wider_latency_spread_fails_the_tail_test_with_its_bounds_named() {
        // Same median bucket, but a tenth of the canary's requests in the slowest buckets.
        let bounds = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, f64::INFINITY];
        let cumulative = |per: [f64; 8]| {
            let mut sum = 0.0;
            bounds
                .iter()
                .zip(per)
                .map(|(b, c)| {
                    sum += c;
                    (*b, sum)
                })
                .collect::<Vec<_>>()
        };
        let base = cumulative([0.0, 100.0, 800.0, 1000.0, 100.0, 0.0, 0.0, 0.0]);
        let canary = cumulative([100.0, 100.0, 700.0, 800.0, 100.0, 100.0, 100.0, 0.0]);
        let s = sample(
            SideCounts {
                requests: 2000.0,
                failures: 0.0,
                buckets: canary,
            },
            SideCounts {
                requests: 2000.0,
                failures: 0.0,
                buckets: base,
            },
        );
        let a = against(Some(&s), &BaselineSettings::ga(), 1);
        let tail = a
            .judged
            .iter()
            .find(|j| j.result().name == "latency_tail")
            .expect("a tail check");
        assert_eq!(tail.result().outcome, crate::domain::CheckOutcome::Failed);
        assert!(
            tail.phrase().contains("above 100ms (baseline p95 50ms)"),
            "{}",
            tail.phrase()
        );
        assert!(a.judged.iter().any(|j| j.result().name == "latency_shift"));
    }

    #[test]
    fn p_values_and_effects_read_as_a_person_writes_them() {
        assert_eq!(p_value(0.3123), "p=0.31");
        assert_eq!(p_value(0.00042), "p=0.0004");
        assert_eq!(p_value(1e-9), "p<0.0001");
        assert_eq!(signed(2.84, 1), "+2.8");
        assert_eq!(signed_percent(-0.034), "-3%");
        assert_eq!(signed_percent(-0.001), "+0%");
        assert_eq!(signed(-0.04, 1), "+0.0");
        assert_eq!(percent(0.95), "95");
        assert_eq!(two_figures(0.006079), "0.0061");
        assert_eq!(two_figures(0.5), "0.50");
        assert_eq!(percent(0.999), "99.9");
    }
}
