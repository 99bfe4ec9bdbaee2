//! Comparing two latency distributions given as histograms (Prometheus buckets with the same
//! upper bounds on both sides), with a relative margin: "is the canary slower than the baseline
//! by more than `margin`" (0.2 = 20% slower), asked two ways, since either can hide the other:
//!
//! - [`location`]: the Wilcoxon–Mann–Whitney rank-sum test (Mann and Whitney 1947, Annals of
//!   Mathematical Statistics 18(1):50–60) with the normal approximation and the variance
//!   corrected for ties (Lehmann, *Nonparametrics*, 1975, §1.4). Each request counts at its
//!   bucket's representative value (the geometric middle of the bucket's bounds; beyond the
//!   last finite bound, twice that bound), so all requests of a bucket tie. The baseline's values
//!   are multiplied by 1 + margin before ranking; inverting the test over that factor gives the
//!   interval and the point estimate (Hodges and Lehmann 1963) of the relative shift.
//! - [`tail`]: the share of canary requests above the baseline's 95th percentile (moved up by the
//!   margin, to the next bucket bound), against the baseline's own share above that percentile,
//!   with the score test of [`super::proportions`]. A canary whose median is unchanged but whose
//!   latency spread widened passes the rank test and fails this one.
//!
//! What neither sees: differences inside one bucket (a canary 30% slower whose requests stay in
//! the same buckets as the baseline's), and anything beyond the last finite bound but its count.

use super::proportions::{self, Counts};
use super::{Comparison, crossing, normal_cdf, two_sided_z};

/// A latency histogram: ascending upper bounds (the last may be +Inf) and the count of requests
/// in each bucket (not cumulative).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
}

/// Why buckets do not make a histogram.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HistogramError {
    #[error("the histogram has no buckets")]
    Empty,
    #[error("bucket bounds must be positive and strictly ascending")]
    Bounds,
    #[error("cumulative bucket counts must not decrease")]
    Counts,
}

impl Histogram {
    /// From Prometheus-style buckets: `(upper bound, cumulative count)` in any order.
    pub fn from_cumulative(mut buckets: Vec<(f64, f64)>) -> Result<Self, HistogramError> {
        if buckets.is_empty() {
            return Err(HistogramError::Empty);
        }
        if buckets
            .iter()
            .any(|(le, c)| le.is_nan() || *le <= 0.0 || !c.is_finite() || *c < 0.0)
        {
            return Err(HistogramError::Bounds);
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut bounds = Vec::with_capacity(buckets.len());
        let mut counts = Vec::with_capacity(buckets.len());
        let mut previous = 0.0;
        for (le, cumulative) in buckets {
            if bounds.last().is_some_and(|b: &f64| *b >= le) {
                return Err(HistogramError::Bounds);
            }
            if cumulative + 1e-9 < previous {
                return Err(HistogramError::Counts);
            }
            bounds.push(le);
            // Rates of counters come back fractional; requests are whole.
            counts.push((cumulative - previous).max(0.0).round() as u64);
            previous = cumulative.max(previous);
        }
        Ok(Histogram { bounds, counts })
    }

    /// This histogram and `other` (the same bounds) counted together: the requests of two
    /// windows, or of two sides. `None` when the bounds differ.
    pub fn add(&self, other: &Histogram) -> Option<Histogram> {
        (self.bounds == other.bounds).then(|| Histogram {
            bounds: self.bounds.clone(),
            counts: self
                .counts
                .iter()
                .zip(&other.counts)
                .map(|(a, b)| a + b)
                .collect(),
        })
    }

    /// All requests counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value each request of bucket `i` counts at.
    fn value(&self, i: usize) -> f64 {
        let upper = self.bounds[i];
        let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
        match (lower > 0.0, upper.is_finite()) {
            (true, true) => (lower * upper).sqrt(),
            (false, true) => upper / 2.0,
            (true, false) => lower * 2.0,
            (false, false) => 1.0,
        }
    }

    /// The share of requests above `bound` (one of the bounds), in [0, 1]; 0 without requests.
    pub fn share_above(&self, bound: f64) -> f64 {
        match self.total() {
            0 => 0.0,
            n => self.above(bound) as f64 / n as f64,
        }
    }

    /// Requests above `bound` (one of the bounds).
    fn above(&self, bound: f64) -> u64 {
        self.bounds
            .iter()
            .zip(&self.counts)
            .filter(|(b, _)| **b > bound)
            .map(|(_, c)| c)
            .sum()
    }

    /// The smallest bound at or below which at least `q` of the requests fall.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let need = q * self.total() as f64;
        let mut seen = 0u64;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            seen += c;
            if seen as f64 >= need {
                return Some(*b);
            }
        }
        None
    }
}

/// The rank-sum statistic (standardised: positive when the canary ranks above the baseline)
/// with the baseline's values multiplied by `factor`.
fn rank_statistic(canary: &Histogram, baseline: &Histogram, factor: f64) -> f64 {
    let mut values: Vec<(f64, u64, u64)> =
        Vec::with_capacity(canary.counts.len() + baseline.counts.len());
    values.extend(
        (0..canary.counts.len())
            .filter(|i| canary.counts[*i] > 0)
            .map(|i| (canary.value(i), canary.counts[i], 0)),
    );
    values.extend(
        (0..baseline.counts.len())
            .filter(|i| baseline.counts[*i] > 0)
            .map(|i| (baseline.value(i) * factor, 0, baseline.counts[i])),
    );
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (n1, n2) = (canary.total() as f64, baseline.total() as f64);
    let total = n1 + n2;
    let (mut rank_sum, mut ties, mut below) = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < values.len() {
        // One tie group: equal values (up to rounding of the factor).
        let value = values[i].0;
        let (mut in_canary, mut in_group) = (0.0, 0.0);
        while i < values.len() && (values[i].0 - value).abs() <= value.abs() * 1e-12 {
            in_canary += values[i].1 as f64;
            in_group += (values[i].1 + values[i].2) as f64;
            i += 1;
        }
        let mid_rank = below + (in_group + 1.0) / 2.0;
        rank_sum += in_canary * mid_rank;
        ties += in_group * in_group * in_group - in_group;
        below += in_group;
    }
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)));
    if variance > 0.0 {
        (u - mean) / variance.sqrt()
    } else {
        0.0
    }
}

/// The rank test: `effect` is the estimated relative shift of the canary against the baseline
/// (0.2 = 20% slower), with its two-sided interval at `confidence`; `p_value` answers "is the
/// canary slower by more than `margin`". `None` when a side has no requests.
pub fn location(
    canary: &Histogram,
    baseline: &Histogram,
    margin: f64,
    confidence: f64,
) -> Option<Comparison> {
    if canary.total() == 0 || baseline.total() == 0 {
        return None;
    }
    let z = two_sided_z(confidence);
    // Searched on the log of the factor, from a hundredth to a hundred times.
    let statistic = |log_factor: f64| rank_statistic(canary, baseline, log_factor.exp());
    let (lo, hi) = (0.01f64.ln(), 100f64.ln());
    let shift = |log_factor: f64| log_factor.exp() - 1.0;
    let effect = shift(crossing(statistic, 0.0, lo, hi));
    let low = shift(crossing(statistic, z, lo, hi));
    let high = shift(crossing(statistic, -z, lo, hi));
    let p_value = 1.0 - normal_cdf(rank_statistic(canary, baseline, 1.0 + margin.max(0.0)));
    Some(Comparison {
        effect,
        low,
        high,
        p_value,
    })
}

/// The tail test: `effect` is the canary's share of requests above the threshold minus the
/// baseline's share above its 95th percentile (0.05 = five more requests in a hundred), with its
/// interval at `confidence`; `p_value` answers "does the canary have more slow requests". The
/// threshold is the baseline's 95th percentile times 1 + `margin`, moved up to a bucket bound.
/// `None` when a side has no requests or the threshold lies beyond the last finite bound.
pub fn tail(
    canary: &Histogram,
    baseline: &Histogram,
    margin: f64,
    confidence: f64,
) -> Option<Comparison> {
    if canary.total() == 0 || baseline.total() == 0 || canary.bounds != baseline.bounds {
        return None;
    }
    let (p95, threshold) = tail_bounds(baseline, margin)?;
    let c = Counts {
        requests: canary.total(),
        failures: canary.above(threshold),
    };
    let b = Counts {
        requests: baseline.total(),
        failures: baseline.above(p95),
    };
    proportions::compare(c, b, 0.0, confidence)
}

/// The bounds of the tail test: the baseline's 95th percentile (a bucket bound) and the
/// canary's threshold, that percentile times 1 + `margin` moved up to a bucket bound. `None`
/// when either lies beyond the last finite bound.
pub fn tail_bounds(baseline: &Histogram, margin: f64) -> Option<(f64, f64)> {
    let p95 = baseline.quantile_bound(0.95).filter(|b| b.is_finite())?;
    let threshold = *baseline
        .bounds
        .iter()
        .find(|b| **b >= p95 * (1.0 + margin.max(0.0)))?;
    threshold.is_finite().then_some((p95, threshold))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 8] = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, f64::INFINITY];

    /// A histogram from per-bucket counts over [`BOUNDS`].
    fn hist(counts: [u64; 8]) -> Histogram {
        let mut cumulative = 0.0;
        let buckets = BOUNDS
            .iter()
            .zip(counts)
            .map(|(b, c)| {
                cumulative += c as f64;
                (*b, cumulative)
            })
            .collect();
        Histogram::from_cumulative(buckets).expect("valid buckets")
    }

    #[test]
    fn buckets_are_read_from_cumulative_counts_and_bad_ones_refused() {
        let h = Histogram::from_cumulative(vec![(10.0, 3.0), (f64::INFINITY, 10.0), (5.0, 1.0)])
            .expect("valid");
        assert_eq!(h.counts, vec![1, 2, 7]);
        assert_eq!(h.total(), 10);
        assert_eq!(
            Histogram::from_cumulative(vec![]),
            Err(HistogramError::Empty)
        );
        assert_eq!(
            Histogram::from_cumulative(vec![(5.0, 3.0), (10.0, 2.0)]),
            Err(HistogramError::Counts)
        );
        assert_eq!(
            Histogram::from_cumulative(vec![(5.0, 1.0), (5.0, 2.0)]),
            Err(HistogramError::Bounds)
        );
        assert_eq!(
            Histogram::from_cumulative(vec![(f64::NAN, 1.0)]),
            Err(HistogramError::Bounds)
        );
    }

    #[test]
    fn histograms_with_the_same_bounds_add_up() {
        let a = hist([1, 2, 3, 4, 5, 6, 7, 8]);
        let sum = a.add(&a).expect("same bounds");
        assert_eq!(sum.counts, vec![2, 4, 6, 8, 10, 12, 14, 16]);
        let other = Histogram::from_cumulative(vec![(1.0, 1.0)]).expect("valid");
        assert!(a.add(&other).is_none());
    }

    #[test]
    fn the_rank_statistic_matches_a_direct_count_of_pairs() {
        let canary = hist([0, 4, 10, 3, 0, 1, 0, 0]);
        let baseline = hist([2, 6, 9, 1, 0, 0, 0, 1]);
        // U by definition: pairs where the canary is larger, ties counting a half.
        let (mut u, mut n1, mut n2) = (0.0, 0.0, 0.0);
        for i in 0..8 {
            n1 += canary.counts[i] as f64;
            n2 += baseline.counts[i] as f64;
            for j in 0..8 {
                let pairs = (canary.counts[i] * baseline.counts[j]) as f64;
                u += pairs
                    * match i.cmp(&j) {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Equal => 0.5,
                        std::cmp::Ordering::Less => 0.0,
                    };
            }
        }
        let mut ties = 0.0;
        for i in 0..8 {
            let t = (canary.counts[i] + baseline.counts[i]) as f64;
            ties += t * t * t - t;
        }
        let n = n1 + n2;
        let expected =
            (u - n1 * n2 / 2.0) / (n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))).sqrt();
        assert!((rank_statistic(&canary, &baseline, 1.0) - expected).abs() < 1e-9);
    }

    #[test]
    fn the_rank_statistic_matches_scipy() {
        // scipy 1.x `mannwhitneyu(c, b * factor, alternative="greater", method="asymptotic",
        // use_continuity=False)` on the requests expanded at their buckets' values, as z.
        let baseline = hist([50, 200, 400, 250, 80, 15, 4, 1]);
        let canary = hist([0, 50, 200, 400, 250, 80, 15, 5]);
        assert!((rank_statistic(&canary, &baseline, 1.0) - 19.367_197_933_639).abs() < 1e-6);
        assert!((rank_statistic(&canary, &baseline, 1.2) - 10.635_944_424_351).abs() < 1e-6);
    }

    #[test]
    fn identical_histograms_show_no_shift() {
        let h = hist([50, 200, 400, 250, 80, 15, 4, 1]);
        let c = location(&h, &h, 0.2, 0.99).expect("traffic");
        assert!(c.effect.abs() < 0.05, "{c:?}");
        assert!(c.low < 0.0 && c.high > 0.0, "{c:?}");
        assert!(!c.worse(0.05));
        let t = tail(&h, &h, 0.2, 0.99).expect("a threshold");
        assert!(!t.worse(0.05), "{t:?}");
    }

    #[test]
    fn a_canary_a_bucket_slower_fails_the_rank_test() {
        let baseline = hist([50, 200, 400, 250, 80, 15, 4, 1]);
        let canary = hist([0, 50, 200, 400, 250, 80, 15, 5]);
        let c = location(&canary, &baseline, 0.2, 0.99).expect("traffic");
        assert!(c.worse(0.001), "{c:?}");
        assert!(c.effect > 0.5 && c.low > 0.2, "{c:?}");
    }

    #[test]
    fn a_wider_spread_with_the_same_median_fails_the_tail_test_only() {
        let baseline = hist([0, 100, 400, 400, 100, 0, 0, 0]);
        // The same middle, ten times the requests far out on both sides.
        let canary = hist([100, 50, 300, 300, 50, 100, 80, 20]);
        let rank = location(&canary, &baseline, 0.2, 0.99).expect("traffic");
        assert!(!rank.worse(0.05), "{rank:?}");
        let t = tail(&canary, &baseline, 0.2, 0.99).expect("a threshold");
        assert!(t.worse(0.001), "{t:?}");
        assert!((t.effect - 0.1).abs() < 1e-12, "{t:?}");
    }

    #[test]
    fn an_empty_side_or_an_infinite_threshold_cannot_be_judged() {
        let h = hist([50, 200, 400, 250, 80, 15, 4, 1]);
        let empty = hist([0; 8]);
        assert!(location(&empty, &h, 0.2, 0.99).is_none());
        assert!(tail(&h, &empty, 0.2, 0.99).is_none());
        // The baseline's p95 lies beyond the last finite bound.
        let slow = hist([0, 0, 0, 0, 0, 0, 10, 90]);
        assert!(tail(&h, &slow, 0.2, 0.99).is_none());
    }
}
