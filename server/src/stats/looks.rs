//! Paying for repeated looks: a rollout judges its canary at every check, and each look is a
//! new chance to reject identical versions by luck. The error budget `alpha` is spent over the
//! looks so that the chance of any false rejection in the whole rollout stays under `alpha`.
//!
//! The schedule is α·6/(π²k²) for the k-th look: the series sums to α over infinitely many
//! looks, so by Boole's inequality the rollout-wide false-rejection rate is at most α whatever
//! the number of checks and however the checks' windows overlap. It needs no planned number of
//! looks (group-sequential bounds such as Pocock's or O'Brien–Fleming's do), and it spends
//! most on the first looks (61% of α on the first), so strong early evidence still ends a
//! rollout early. The price is power on late looks: see the judge's benchmark.

use std::f64::consts::PI;

/// The significance level of the `look`-th judged check (1-based; 0 counts as 1) of a rollout
/// whose whole budget is `alpha`.
pub fn alpha_at(alpha: f64, look: u32) -> f64 {
    let k = f64::from(look.max(1));
    alpha * 6.0 / (PI * PI * k * k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_levels_of_all_looks_add_up_to_the_budget_and_never_more() {
        let alpha = 0.01;
        let spent: f64 = (1..=100_000).map(|k| alpha_at(alpha, k)).sum();
        assert!(spent < alpha);
        assert!(spent > alpha * 0.9999);
        assert!(alpha_at(alpha, 1) > alpha_at(alpha, 2));
        assert_eq!(alpha_at(alpha, 0), alpha_at(alpha, 1));
    }
}
