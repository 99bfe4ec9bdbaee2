//! One look of the baseline judge: the canary's and the baseline's requests, failures and
//! latency over the same window, compared with the tests of this module's siblings at the
//! significance level this look may spend. What a look finds (no data, pass, fail) and the
//! numbers behind it; what a rollout does with it is the engine's.

use super::Comparison;
use super::looks::alpha_at;
use super::proportions::{self, Counts};
use super::ranks::{self, Histogram};

/// What one side served over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    pub requests: u64,
    pub failures: u64,
    /// Request durations, when latency is judged.
    pub latency: Option<Histogram>,
}

/// How sure the judge must be, and what it tolerates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// 0.99: identical versions are rolled back in at most 1% of rollouts.
    pub confidence: f64,
    /// Percentage points of error rate above the baseline's tolerated (0.5).
    pub max_error_rate_increase: f64,
    /// Relative slowdown tolerated (0.2 = 20%).
    pub max_latency_increase: f64,
    /// Requests each side needs in the window before it is judged.
    pub min_requests: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            confidence: 0.99,
            max_error_rate_increase: 0.5,
            max_latency_increase: 0.2,
            min_requests: 200,
        }
    }
}

/// Which test a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// Error proportions, score test (effect in percentage points).
    Errors,
    /// Latency, rank-sum test (effect relative).
    LatencyShift,
    /// Latency, share above the baseline's 95th percentile (effect in percentage points).
    LatencyTail,
}

/// One test's answer at this look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    pub test: Test,
    /// The effect in the test's unit, with its interval at the rollout's confidence.
    pub comparison: Comparison,
    /// The level this look's test was held to (a share of 1 − confidence).
    pub alpha: f64,
    pub failed: bool,
}

/// What one look found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A side served fewer than `min_requests`: not judged, and not a pass.
    NoData { canary: u64, baseline: u64 },
    /// Every test ran; `failed` when any of them found the canary worse.
    Judged {
        findings: Vec<Finding>,
        failed: bool,
    },
}

/// Judges look number `look` (1-based, counting looks that had data) of a rollout. The level
/// of the look is split evenly between the error test and, with histograms on both sides, the
/// two latency tests, so the rollout as a whole keeps to 1 − confidence.
pub fn judge(canary: &Side, baseline: &Side, settings: &Settings, look: u32) -> Verdict {
    if canary.requests < settings.min_requests.max(1)
        || baseline.requests < settings.min_requests.max(1)
    {
        return Verdict::NoData {
            canary: canary.requests,
            baseline: baseline.requests,
        };
    }
    let alpha = alpha_at(1.0 - settings.confidence, look);
    let latency = canary.latency.as_ref().zip(baseline.latency.as_ref());
    let tests = if latency.is_some() { 3.0 } else { 1.0 };
    let level = alpha / tests;
    let mut findings = Vec::with_capacity(3);
    let mut push = |test: Test, comparison: Option<Comparison>, scale: f64| {
        if let Some(c) = comparison {
            findings.push(Finding {
                test,
                comparison: Comparison {
                    effect: c.effect * scale,
                    low: c.low * scale,
                    high: c.high * scale,
                    p_value: c.p_value,
                },
                alpha: level,
                failed: c.worse(level),
            });
        }
    };
    let counts = |side: &Side| Counts {
        requests: side.requests,
        failures: side.failures,
    };
    push(
        Test::Errors,
        proportions::compare(
            counts(canary),
            counts(baseline),
            settings.max_error_rate_increase / 100.0,
            settings.confidence,
        ),
        100.0,
    );
    if let Some((c, b)) = latency {
        let margin = settings.max_latency_increase;
        push(
            Test::LatencyShift,
            ranks::location(c, b, margin, settings.confidence),
            1.0,
        );
        push(
            Test::LatencyTail,
            ranks::tail(c, b, margin, settings.confidence),
            100.0,
        );
    }
    let failed = findings.iter().any(|f| f.failed);
    Verdict::Judged { findings, failed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(requests: u64, failures: u64) -> Side {
        Side {
            requests,
            failures,
            latency: None,
        }
    }

    #[test]
    fn too_few_requests_on_either_side_are_no_data_never_a_pass() {
        let s = Settings::default();
        assert_eq!(
            judge(&side(199, 0), &side(5000, 0), &s, 1),
            Verdict::NoData {
                canary: 199,
                baseline: 5000
            }
        );
        assert!(matches!(
            judge(&side(5000, 0), &side(10, 0), &s, 1),
            Verdict::NoData { .. }
        ));
    }

    #[test]
    fn the_same_high_error_rate_on_both_sides_passes() {
        // Both at 5%: a fixed 99% success threshold would roll this canary back.
        let v = judge(&side(2000, 100), &side(2000, 100), &Settings::default(), 1);
        assert!(matches!(v, Verdict::Judged { failed: false, .. }), "{v:?}");
    }

    #[test]
    fn three_percent_against_none_fails_naming_the_numbers() {
        let v = judge(&side(1000, 30), &side(1000, 0), &Settings::default(), 1);
        let Verdict::Judged { findings, failed } = v else {
            panic!("judged")
        };
        assert!(failed);
        let errors = findings[0];
        assert_eq!(errors.test, Test::Errors);
        assert!((errors.comparison.effect - 3.0).abs() < 1e-9);
        assert!(errors.comparison.low > 0.5, "{errors:?}");
        assert!(errors.alpha < 0.01);
    }

    #[test]
    fn later_looks_demand_stronger_evidence() {
        // A difference that the first look's level catches and the tenth's does not.
        let (c, b) = (side(6000, 90), side(6000, 30));
        let s = Settings::default();
        let failed = |look| {
            matches!(
                judge(&c, &b, &s, look),
                Verdict::Judged { failed: true, .. }
            )
        };
        assert!(failed(1));
        assert!(!failed(10));
    }
}
