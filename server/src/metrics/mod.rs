//! Canary metrics: the trait the engine measures through, the query backend (`prometheus`),
//! the observers that say which series a mesh exports (`observer`), and the operator's metric
//! templates (`templates`). Judging a sample against the thresholds is the engine's
//! (`engine::decide`); fetching it is a provider's.

#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod observer;
pub mod prometheus;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::domain::{BaselineSample, Sample};

/// Errors fetching metrics. Clone (one grouped answer serves many rollouts, its error too),
/// so the causes are shared rather than flattened into text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricsError {
    /// The HTTP client could not be built.
    #[error("prometheus client: {source}")]
    Client {
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The request did not get an answer (refused, reset, unreadable).
    #[error("prometheus query failed: {source}")]
    Http {
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// Prometheus refused the query, saying why (its own words).
    #[error("prometheus query failed: {0}")]
    Query(String),
    #[error("prometheus query timed out after {0:?}")]
    Timeout(Duration),
    /// The answer is not the JSON of Prometheus's API.
    #[error("unexpected prometheus response: {source}")]
    Unreadable {
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// A sample's value is not a number.
    #[error("unexpected prometheus response: unreadable value: {source}")]
    Value {
        #[source]
        source: Arc<std::num::ParseFloatError>,
    },
    /// A rollout names an observer the backend does not have (a record written by a newer
    /// server).
    #[error("unknown observer {0:?}")]
    UnknownObserver(String),
    /// The answer is JSON of another shape than the query calls for.
    #[error("unexpected prometheus response: {0}")]
    Response(String),
}

/// What a metrics provider has on a target's workloads, looked at before a rollout starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Coverage {
    /// Of the workloads asked about, those with at least one series in the lookback.
    pub reported: Vec<String>,
    /// Whether the provider has scraped anything at all; `false` means too early to judge
    /// (a Prometheus that just started), not that the workloads are unreported.
    pub scraping: bool,
}

/// Measures a canary workload over a window.
pub trait Metrics: Send + Sync {
    /// Which of `workloads` in `namespace` the provider has any request series of `observer`
    /// (a name of `observer::OBSERVERS`) for over the trailing `lookback`. `Err` when the
    /// provider cannot be reached or fails the query.
    fn coverage<'a>(
        &'a self,
        observer: &'a str,
        namespace: &'a str,
        workloads: &'a [String],
        lookback: Duration,
    ) -> BoxFuture<'a, Result<Coverage, MetricsError>>;

    /// Success rate (percent) and request rate (per second) of `workload` in `namespace`
    /// over the trailing `window`, from the series of `observer`, and with `latency` its p99 request duration
    /// (milliseconds). Each is `None` when the provider has no data for it; the latency is
    /// not measured (no query) without `latency`.
    fn sample<'a>(
        &'a self,
        observer: &'a str,
        namespace: &'a str,
        workload: &'a str,
        window: Duration,
        latency: bool,
    ) -> BoxFuture<'a, Result<Sample, MetricsError>>;

    /// Requests, failed requests and latency buckets of `canary` and of `baseline` (both
    /// workloads of `namespace`) over the trailing `window`, from the series of `observer`:
    /// counts (increases), not rates, so the baseline judge tests what was served. A side
    /// without series counts zero requests.
    fn baseline_sample<'a>(
        &'a self,
        observer: &'a str,
        namespace: &'a str,
        canary: &'a str,
        baseline: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<BaselineSample, MetricsError>>;

    /// The one number an operator's query (a rendered metric template) yields now: `None`
    /// when it yields nothing (an empty result, NaN); an error when the query fails or
    /// yields several series.
    fn value<'a>(&'a self, promql: &'a str) -> BoxFuture<'a, Result<Option<f64>, MetricsError>>;
}
