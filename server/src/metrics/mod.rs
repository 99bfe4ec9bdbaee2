//! Canary metrics: the trait the engine measures through. Judging a sample against the
//! thresholds is the engine's (`engine::decide`); fetching it is a provider's.

pub mod fake;
pub mod prometheus;

use std::time::Duration;

use futures::future::BoxFuture;

use crate::domain::Sample;

/// Errors fetching metrics.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricsError {
    #[error("prometheus query failed: {0}")]
    Query(String),
    #[error("prometheus query timed out after {0:?}")]
    Timeout(Duration),
    #[error("unexpected prometheus response: {0}")]
    Response(String),
}

/// Measures a canary workload over a window.
pub trait Metrics: Send + Sync {
    /// Success rate (percent) and request rate (per second) of `workload` in `namespace`
    /// over the trailing `window`. Both are `None` when the provider has no data.
    fn sample<'a>(
        &'a self,
        namespace: &'a str,
        workload: &'a str,
        window: Duration,
    ) -> BoxFuture<'a, Result<Sample, MetricsError>>;
}
