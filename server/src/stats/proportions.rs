//! Comparing two error proportions (failures over requests, per side over the same window) with
//! a margin: the score test and interval of Miettinen and Nurminen (1985), "Comparative analysis
//! of two rates", Statistics in Medicine 4(2):213–226, as used for non-inferiority by Farrington
//! and Manning (1990), Statistics in Medicine 9(12):1447–1454.
//!
//! Why this test: it works on the counts themselves (not on rates of rates), it stays close to
//! its nominal level down to small counts and zero failures (the variance is taken under the
//! null hypothesis, from the maximum-likelihood proportions constrained to differ by the margin,
//! with the N/(N−1) small-sample factor), and the same statistic inverted gives the confidence
//! interval, so interval and test never disagree. Wald's test, by contrast, has zero variance
//! when a side has no failures and rejects far too often at small counts.

use super::{Comparison, crossing, normal_cdf, two_sided_z};

/// Requests and failed requests on one side over the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub failures: u64,
}

impl Counts {
    /// The observed failure proportion; `None` without requests.
    pub fn proportion(self) -> Option<f64> {
        (self.requests > 0).then(|| self.failures.min(self.requests) as f64 / self.requests as f64)
    }
}

/// Compares the canary's failure proportion with the baseline's: `effect` is canary minus
/// baseline (0.01 = one point), the interval is two-sided at `confidence`, and `p_value`
/// answers "does the canary fail more often than the baseline by more than `margin`"
/// (a proportion, 0.005 = half a point, in [0, 1)). `None` when a side has no requests.
pub fn compare(
    canary: Counts,
    baseline: Counts,
    margin: f64,
    confidence: f64,
) -> Option<Comparison> {
    let effect = canary.proportion()? - baseline.proportion()?;
    let z = two_sided_z(confidence);
    let statistic = |delta: f64| score(canary, baseline, delta);
    // The statistic falls as the hypothesised difference grows; the interval is where it lies
    // within ±z.
    let low = crossing(statistic, z, -1.0, 1.0);
    let high = crossing(statistic, -z, -1.0, 1.0);
    let p_value = 1.0 - normal_cdf(score(canary, baseline, margin.clamp(0.0, 1.0 - 1e-9)));
    Some(Comparison {
        effect,
        low: low.min(effect),
        high: high.max(effect),
        p_value,
    })
}

/// The Miettinen–Nurminen score statistic for "canary minus baseline equals `delta`":
/// positive when the canary fails more often than that.
fn score(canary: Counts, baseline: Counts, delta: f64) -> f64 {
    let (n1, n2) = (canary.requests as f64, baseline.requests as f64);
    let (x1, x2) = (
        canary.failures.min(canary.requests) as f64,
        baseline.failures.min(baseline.requests) as f64,
    );
    let difference = x1 / n1 - x2 / n2 - delta;
    let (r1, r2) = constrained(x1, n1, x2, n2, delta);
    let total = n1 + n2;
    let small_sample = if total > 1.0 {
        total / (total - 1.0)
    } else {
        1.0
    };
    let variance = (r1 * (1.0 - r1) / n1 + r2 * (1.0 - r2) / n2) * small_sample;
    if variance > 0.0 {
        difference / variance.sqrt()
    } else if difference > 0.0 {
        f64::INFINITY
    } else if difference < 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    }
}

/// The maximum-likelihood proportions (canary, baseline) under the constraint that they differ
/// by `delta`. The log-likelihood is concave in the baseline's proportion, so its derivative
/// falls through zero once: found by bisection on the open range where both proportions are
/// valid (an end of the range when the maximum lies there).
fn constrained(x1: f64, n1: f64, x2: f64, n2: f64, delta: f64) -> (f64, f64) {
    let lo = (-delta).max(0.0);
    let hi = (1.0 - delta).min(1.0);
    if hi <= lo {
        return (lo + delta, lo);
    }
    // Terms whose count is zero are left out: they contribute nothing at the boundary either.
    let slope = |p2: f64| {
        let p1 = p2 + delta;
        let mut d = 0.0;
        if x1 > 0.0 {
            d += x1 / p1;
        }
        if n1 > x1 {
            d -= (n1 - x1) / (1.0 - p1);
        }
        if x2 > 0.0 {
            d += x2 / p2;
        }
        if n2 > x2 {
            d -= (n2 - x2) / (1.0 - p2);
        }
        d
    };
    let p2 = crossing(slope, 0.0, lo, hi);
    ((p2 + delta).clamp(0.0, 1.0), p2.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, failures: u64) -> Counts {
        Counts { requests, failures }
    }

    #[test]
    fn the_constrained_proportions_maximise_the_likelihood_by_brute_force() {
        let loglik = |x1: f64, n1: f64, x2: f64, n2: f64, p1: f64, p2: f64| {
            x1 * p1.ln() + (n1 - x1) * (1.0 - p1).ln() + x2 * p2.ln() + (n2 - x2) * (1.0 - p2).ln()
        };
        for &(x1, n1, x2, n2, delta) in &[
            (30.0, 1000.0, 1.0, 1000.0, 0.005),
            (3.0, 200.0, 7.0, 400.0, 0.01),
            (12.0, 50.0, 2.0, 80.0, -0.05),
        ] {
            let (r1, r2) = constrained(x1, n1, x2, n2, delta);
            assert!((r1 - r2 - delta).abs() < 1e-9);
            let best = loglik(x1, n1, x2, n2, r1, r2);
            for i in 1..10_000 {
                let p2 = f64::from(i) / 10_000.0;
                let p1 = p2 + delta;
                if p1 > 0.0 && p1 < 1.0 {
                    assert!(
                        loglik(x1, n1, x2, n2, p1, p2) <= best + 1e-9,
                        "{x1}/{n1} {x2}/{n2} {delta}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_test_and_interval_match_an_independent_computation() {
        // The same statistic computed independently in Python: the constrained proportions by
        // scipy's bounded scalar optimiser on the log-likelihood, the interval's ends by brentq.
        // (statsmodels 0.14's `confint_proportions_2indep(..., method="score",
        // correction=True)` gives the first interval to 1e-10 and the others to 1e-5.)
        let cases = [
            (
                (30, 1000, 0, 1000, 0.005),
                2.529_930_248e-7,
                (0.018_904_161_9, 0.047_294_612_1),
            ),
            (
                (260, 5000, 250, 5000, 0.005),
                0.752_189_531_2,
                (-0.009_382_977_3, 0.013_402_109_0),
            ),
            (
                (12, 2000, 5, 2000, 0.002),
                0.228_021_065_7,
                (-0.002_176_250_8, 0.010_156_282_8),
            ),
        ];
        for ((f1, n1, f2, n2, margin), p, (low, high)) in cases {
            let c = compare(counts(n1, f1), counts(n2, f2), margin, 0.99).expect("traffic");
            assert!(
                (c.p_value - p).abs() < 1e-6 * p.max(1e-3),
                "{c:?} against p = {p}"
            );
            assert!(
                (c.low - low).abs() < 1e-6 && (c.high - high).abs() < 1e-6,
                "{c:?}"
            );
        }
    }

    #[test]
    fn identical_proportions_give_no_evidence_against_the_canary() {
        let c = compare(counts(1000, 10), counts(1000, 10), 0.0, 0.95).expect("traffic");
        assert!(c.effect.abs() < 1e-12);
        assert!((c.p_value - 0.5).abs() < 1e-9);
        assert!(c.low < 0.0 && c.high > 0.0);
    }

    #[test]
    fn three_percent_against_none_is_worse_beyond_half_a_point() {
        let c = compare(counts(1000, 30), counts(1000, 0), 0.005, 0.99).expect("traffic");
        assert!((c.effect - 0.03).abs() < 1e-12);
        assert!(c.worse(0.001), "p = {}", c.p_value);
        assert!(c.low > 0.005 && c.high < 0.06, "{c:?}");
    }

    #[test]
    fn a_difference_inside_the_margin_is_not_worse() {
        // 5.2% against 5.0%, half a point tolerated.
        let c = compare(counts(5000, 260), counts(5000, 250), 0.005, 0.99).expect("traffic");
        assert!(!c.worse(0.05), "p = {}", c.p_value);
    }

    #[test]
    fn no_failures_on_either_side_are_judged_without_dividing_by_zero() {
        let c = compare(counts(300, 0), counts(300, 0), 0.005, 0.99).expect("traffic");
        assert!(c.p_value.is_finite() && c.p_value > 0.5);
        let c = compare(counts(300, 0), counts(300, 0), 0.0, 0.99).expect("traffic");
        assert!(!c.worse(0.05));
        assert!(c.low <= 0.0 && c.high >= 0.0);
    }

    #[test]
    fn a_side_without_requests_cannot_be_compared() {
        assert!(compare(counts(0, 0), counts(100, 1), 0.005, 0.99).is_none());
        assert!(compare(counts(100, 1), counts(0, 0), 0.005, 0.99).is_none());
    }

    #[test]
    fn the_interval_and_the_test_agree() {
        // Where the interval's lower end lies above the margin, the one-sided test at the
        // matching level rejects, and not where it lies below.
        for &(f1, f2) in &[(30, 5), (12, 5), (8, 5)] {
            let c = compare(counts(2000, f1), counts(2000, f2), 0.002, 0.90).expect("traffic");
            assert_eq!(c.low > 0.002, c.worse(0.05), "{f1} vs {f2}: {c:?}");
        }
    }
}
