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

use crate::domain::{AnalysisSettings, RouteRef};
use crate::events::Hub;
use crate::metrics::templates::MetricTemplates;
use crate::metrics::{Metrics, MetricsError};
use crate::router::{Router, RouterError};
use crate::store::prune::Retention;
use crate::store::{Store, StoreError};
use crate::webhooks::{AllowList, Webhooks};
use crate::workloads::Workloads;

pub use decide::{Action, Command, Decision, Observation, decide};
pub use supervisor::{Cursor, ListQuery, Page, Supervisor};

/// The adapters the engine drives.
#[derive(Clone)]
pub struct Ports {
    pub workloads: Arc<dyn Workloads>,
    pub router: Arc<dyn Router>,
    pub metrics: Arc<dyn Metrics>,
    pub store: Arc<dyn Store>,
    pub webhooks: Arc<dyn Webhooks>,
    pub hub: Hub,
    /// Counts checks and finished rollouts from the events the engine records.
    pub telemetry: crate::telemetry::Telemetry,
    /// Changes to the Kubernetes objects the watch caches see, which wake a rollout waiting on
    /// them (see `Decision::watch`); `None` (the fakes): rollouts look again on their poll.
    pub changes: Option<crate::cache::Changes>,
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Analysis settings for fields a request leaves out, and for auto-mode rollouts.
    pub defaults: AnalysisSettings,
    /// Shortest metrics window (rate() needs at least two scrapes in it).
    pub metrics_window: Duration,
    /// Checks fall on shared ticks every `min(interval, check_tick)` (see
    /// `decide::until_tick`), so one grouped query serves every rollout checking on a tick;
    /// zero: each rollout checks on its own schedule.
    pub check_tick: Duration,
    /// Watch for new canary revisions of labelled GA Deployments.
    pub auto: bool,
    /// How often auto mode looks for new revisions.
    pub auto_interval: Duration,
    /// Time between moving all traffic off the canary and scaling it down, so mesh proxies
    /// holding the old route have the new one before the canary's pods go.
    pub scale_down_delay: Duration,
    /// The observer (a name of `metrics::observer::OBSERVERS`) judging the rollouts whose
    /// start names none.
    pub observer: String,
    /// Finished rollout records kept.
    pub retention: Retention,
    /// The operator's metric templates, by name.
    pub templates: Arc<MetricTemplates>,
    /// The hosts webhooks may be sent to.
    pub webhook_allow: AllowList,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            defaults: AnalysisSettings::default(),
            metrics_window: Duration::from_secs(60),
            check_tick: Duration::ZERO,
            auto: false,
            auto_interval: Duration::from_secs(2),
            scale_down_delay: DEFAULT_SCALE_DOWN_DELAY,
            observer: crate::metrics::observer::istio::NAME.to_owned(),
            retention: Retention::default(),
            templates: Arc::default(),
            webhook_allow: AllowList::default(),
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
    /// The route that splits the traffic; `None`: the one in the namespace routing to the GA
    /// Service.
    pub route: Option<RouteRef>,
    /// The observer judging it (a known name); `None`: the server's default.
    pub observer: Option<String>,
    pub images: BTreeMap<String, String>,
    pub analysis: AnalysisSettings,
    pub request_id: String,
    pub canary_replicas: Option<u32>,
    /// Who asked (the authenticated caller).
    pub created_by: String,
}

/// Errors of engine operations: what went wrong. What a caller is told (a gRPC status) is
/// the api layer's business.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request contradicts itself (a canary named like its target).
    #[error("{0}")]
    InvalidRequest(String),
    /// A rollout or Deployment it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The target already has an active rollout.
    #[error("{0}")]
    AlreadyActive(String),
    /// Refused in the present state of the rollout or the cluster: a command its phase does
    /// not allow, a container the canary lacks, a target without request metrics.
    #[error("{0}")]
    Refused(String),
    /// The route could not be read, or does not split traffic as a rollout needs.
    #[error(transparent)]
    Route(#[from] RouterError),
    /// The rollout store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics provider did not answer the start's preflight.
    #[error(
        "the metrics provider cannot be reached, so the canary could not be analysed ({0}); nothing was changed"
    )]
    MetricsUnreachable(#[source] MetricsError),
    /// The driver could not carry the command out now (its last step is not recorded, a
    /// write keeps failing, the server is shutting down); trying again may work.
    #[error("{0}")]
    Interrupted(String),
    /// This replica does not lead: another one executes rollouts.
    #[error("{0}")]
    NotLeader(String),
    /// A bug: a poisoned lock.
    #[error("{0}")]
    Internal(String),
}

impl From<decide::NotAdmitted> for EngineError {
    fn from(refusal: decide::NotAdmitted) -> Self {
        use decide::NotAdmitted;
        match refusal {
            NotAdmitted::Invalid(why) => EngineError::InvalidRequest(why),
            NotAdmitted::NotFound(why) => EngineError::NotFound(why),
            NotAdmitted::AlreadyActive(why) => EngineError::AlreadyActive(why),
            NotAdmitted::Refused(why) => EngineError::Refused(why),
        }
    }
}

#[cfg(test)]
mod tests;
