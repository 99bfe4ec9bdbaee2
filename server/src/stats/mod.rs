//! Statistics for judging a canary against a baseline that runs the old version at the same time:
//! tests over request counts and latency histograms that say how sure they are. Pure functions
//! over numbers; fetching the numbers and deciding what to do with a result are elsewhere.
//!
//! Every comparison asks one question, "is the canary worse than the baseline by more than the
//! tolerated margin?", and answers with a [`Comparison`]: the observed effect, a two-sided
//! confidence interval of it, and the one-sided p-value of that question. Repeated looks at
//! the same rollout are paid for with [`looks::alpha_at`].

pub mod baseline;
pub mod looks;
pub mod proportions;
pub mod ranks;

use statrs::function::erf::{erfc, erfc_inv};

/// The canary compared with the baseline on one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Canary minus baseline: a difference of proportions (0.01 = one point), or for latency
    /// a relative shift (0.2 = the canary 20% slower).
    pub effect: f64,
    /// The two-sided confidence interval of `effect` at the level asked for.
    pub low: f64,
    pub high: f64,
    /// The one-sided p-value of "the canary is worse than the baseline by more than the
    /// margin": small when the data say it is.
    pub p_value: f64,
}

impl Comparison {
    /// Whether the data show the canary worse beyond the margin at significance `alpha`.
    pub fn worse(&self, alpha: f64) -> bool {
        self.p_value < alpha
    }
}

/// The standard normal distribution function.
pub(crate) fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// The standard normal quantile of `p` in (0, 1).
pub(crate) fn normal_quantile(p: f64) -> f64 {
    -std::f64::consts::SQRT_2 * erfc_inv(2.0 * p)
}

/// The two-sided critical value for `confidence` (0.95 gives 1.96).
pub(crate) fn two_sided_z(confidence: f64) -> f64 {
    normal_quantile(1.0 - (1.0 - confidence) / 2.0)
}

/// The point where the non-increasing `f` crosses `target`, between `lo` and `hi`, by
/// bisection; an end when `f` stays on one side of `target` over the whole range. Works on
/// step functions too (it returns a point of the step).
pub(crate) fn crossing(f: impl Fn(f64) -> f64, target: f64, mut lo: f64, mut hi: f64) -> f64 {
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if f(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_functions_match_tabulated_values() {
        assert!((normal_cdf(1.959_963_985) - 0.975).abs() < 1e-9);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-15);
        assert!((normal_quantile(0.995) - 2.575_829_304).abs() < 1e-8);
        assert!((two_sided_z(0.95) - 1.959_963_985).abs() < 1e-8);
    }

    #[test]
    fn crossing_finds_where_a_decreasing_function_meets_the_target() {
        let x = crossing(|x| 3.0 - 2.0 * x, 1.0, -10.0, 10.0);
        assert!((x - 1.0).abs() < 1e-9);
        // A function that never comes down to the target: the upper end.
        assert!((crossing(|_| 5.0, 1.0, 0.0, 2.0) - 2.0).abs() < 1e-9);
    }
}
