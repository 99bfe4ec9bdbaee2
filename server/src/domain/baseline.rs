//! Judging the canary against a baseline that runs the old version at the same time: the
//! settings a rollout asked for (with defaults filled in) and what each check found against
//! the baseline. The statistics themselves are `stats`'; fetching the counts is `metrics`'.

use serde::{Deserialize, Serialize};

/// Which pods the canary is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BaselineMode {
    /// GA's own pods, over the same window.
    Ga,
    /// A `TARGET-baseline` Deployment from GA's template, sized and weighted like the canary.
    Deployment,
}

impl BaselineMode {
    /// The name the CLI and messages use.
    pub fn name(self) -> &'static str {
        match self {
            BaselineMode::Ga => "ga",
            BaselineMode::Deployment => "deployment",
        }
    }
}

/// Default confidence: identical versions rolled back in at most 1% of rollouts.
pub const DEFAULT_CONFIDENCE: f64 = 0.99;
/// Default tolerated increase of the error rate, in percentage points.
pub const DEFAULT_MAX_ERROR_RATE_INCREASE: f64 = 0.5;
/// Default tolerated relative slowdown.
pub const DEFAULT_MAX_LATENCY_INCREASE: f64 = 0.2;
/// Default requests per side before a check judges.
pub const DEFAULT_MIN_REQUESTS: u32 = 200;

/// A rollout's baseline judging, with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BaselineSettings {
    pub mode: BaselineMode,
    /// In (0, 1): identical versions are rolled back in at most 1 − confidence of rollouts.
    pub confidence: f64,
    /// Percentage points above the baseline's error rate tolerated.
    pub max_error_rate_increase: f64,
    /// Relative slowdown tolerated (0.2 = 20%).
    pub max_latency_increase: f64,
    /// Requests each side needs since the analysis started before a check judges.
    pub min_requests: u32,
    /// The request set `success_rate_threshold`: it stays as an absolute guard rail. Without
    /// it the server's default threshold does not apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub success_rate_guard: bool,
}

impl BaselineSettings {
    /// GA mode with every default.
    pub fn ga() -> Self {
        Self {
            mode: BaselineMode::Ga,
            confidence: DEFAULT_CONFIDENCE,
            max_error_rate_increase: DEFAULT_MAX_ERROR_RATE_INCREASE,
            max_latency_increase: DEFAULT_MAX_LATENCY_INCREASE,
            min_requests: DEFAULT_MIN_REQUESTS,
            success_rate_guard: false,
        }
    }

    /// The statistics' view of these settings.
    pub fn stats(&self) -> crate::stats::baseline::Settings {
        crate::stats::baseline::Settings {
            confidence: self.confidence,
            max_error_rate_increase: self.max_error_rate_increase,
            max_latency_increase: self.max_latency_increase,
            min_requests: u64::from(self.min_requests),
        }
    }
}

/// What a check found against the baseline, beside the canary's own value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgainstBaseline {
    /// The same metric on the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// One-sided p-value of "the canary is worse by more than the margin".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Canary minus baseline (points, or relative for the latency shift), and its interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_low: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_high: Option<f64>,
    /// The PromQL that produced the values.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
}

/// What one side (the canary, or the baseline) served since the analysis started.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SideCounts {
    pub requests: f64,
    pub failures: f64,
    /// Latency buckets: (upper bound in milliseconds, cumulative count); empty when the mesh
    /// reported none.
    pub buckets: Vec<(f64, f64)>,
}

/// The canary's and the baseline's counts over the same window, and the queries they came
/// from (for a person checking the numbers by hand).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BaselineSample {
    pub canary: SideCounts,
    pub baseline: SideCounts,
    /// The request-count query.
    pub requests_query: String,
    /// The latency-bucket query.
    pub latency_query: String,
}
