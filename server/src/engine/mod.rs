//! The rollout engine: the pure rules (`decide`), one driver task per active rollout
//! (observe, decide, act, persist, publish) and the supervisor that owns the drivers. It knows
//! the workloads, router, metrics and store traits, never kube or tonic.

pub mod auto;
pub mod decide;
mod driver;
pub mod supervisor;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::AnalysisSettings;
use crate::events::Hub;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::store::Store;
use crate::workloads::Workloads;

pub use decide::{Action, Command, Decision, Observation, decide};
pub use supervisor::Supervisor;

/// The adapters the engine drives.
#[derive(Clone)]
pub struct Ports {
    pub workloads: Arc<dyn Workloads>,
    pub router: Arc<dyn Router>,
    pub metrics: Arc<dyn Metrics>,
    pub store: Arc<dyn Store>,
    pub hub: Hub,
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Analysis settings for fields a request leaves out, and for auto-mode rollouts.
    pub defaults: AnalysisSettings,
    /// Shortest metrics window (rate() needs at least two scrapes in it).
    pub metrics_window: Duration,
    /// Watch for new canary revisions of labelled GA Deployments.
    pub auto: bool,
    /// How often auto mode looks for new revisions.
    pub auto_interval: Duration,
    /// Time between moving all traffic off the canary and scaling it down, so mesh proxies
    /// holding the old route have the new one before the canary's pods go.
    pub scale_down_delay: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            defaults: AnalysisSettings::default(),
            metrics_window: Duration::from_secs(60),
            auto: false,
            auto_interval: Duration::from_secs(2),
            scale_down_delay: DEFAULT_SCALE_DOWN_DELAY,
        }
    }
}

/// Default of [`EngineConfig::scale_down_delay`], as Flagger and Argo Rollouts wait.
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(30);

/// A validated request to start a rollout.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    pub namespace: String,
    pub target: String,
    /// Empty = `TARGET-canary`.
    pub canary: String,
    /// Empty = the VirtualService routing to the GA Service.
    pub virtual_service: String,
    pub images: BTreeMap<String, String>,
    pub analysis: AnalysisSettings,
    pub request_id: String,
    pub canary_replicas: Option<u32>,
}

/// Errors of engine operations, by what a caller should make of them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

#[cfg(test)]
mod tests;
