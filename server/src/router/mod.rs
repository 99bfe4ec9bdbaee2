//! Traffic routing: the `Router` trait the engine moves weights through, and its errors.
//! Implementations, one per route kind: `istio` (VirtualService weights); `fake` for tests.
//! `factory` starts the router of each kind and picks the one for each rollout's route.

pub mod factory;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod istio;

use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::cache::Changes;

pub use crate::domain::RouteKind;
pub use crate::domain::views::RouteView;

/// The split a rollout drives: its route (the kind picks the router) and the two Services it
/// divides traffic between.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteSplit {
    pub namespace: String,
    pub kind: RouteKind,
    /// The route's name.
    pub name: String,
    pub ga_service: String,
    pub canary_service: String,
}

/// The kind of route Istio's router drives.
pub const VIRTUAL_SERVICE: &str = "VirtualService";

impl RouteSplit {
    /// The split of `state`'s route between its GA and canary Services.
    pub fn of(state: &crate::domain::Rollout) -> Self {
        RouteSplit {
            namespace: state.namespace.clone(),
            kind: state.route.kind,
            name: state.route.name.clone(),
            ga_service: state.target.clone(),
            canary_service: state.canary.clone(),
        }
    }

    /// The kind of the route, which picks its router.
    pub fn kind(&self) -> &'static str {
        self.kind.name()
    }
}

/// What a kind's router is started from.
pub struct RouterContext<'a> {
    pub client: &'a kube::Client,
    /// Namespaces served (empty = all): what the watch caches hold.
    pub namespaces: &'a [String],
    /// Ends the watch caches.
    pub stop: &'a CancellationToken,
    /// Where the caches report changes to the objects rollouts wait on.
    pub changes: &'a Changes,
    /// Served version of `networking.istio.io`.
    pub istio_api_version: &'a str,
}

/// A started router of one route kind.
pub trait KindRouter: Router {
    /// Waits until its watch cache holds its initial list.
    fn wait_ready(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>>;
}

/// Errors resolving or writing routes.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("VirtualService {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    /// The VirtualService exists but does not split traffic the way a rollout needs.
    #[error("{0}")]
    Topology(String),
    /// No router of this server drives routes of this kind.
    #[error("this server has no router for routes of kind {kind}")]
    Unsupported { kind: String },
    #[error("failed to {action} VirtualService {namespace}/{name}: {source}")]
    Api {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The weight patch computed for the VirtualService is not a valid JSON patch.
    #[error("invalid weight patch for VirtualService {namespace}/{name}: {source}")]
    Patch {
        namespace: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

impl RouterError {
    /// Whether trying again cannot help: the object is gone, no longer splits traffic, or
    /// the API server refuses the request itself (403, 422 and the like).
    pub fn is_permanent(&self) -> bool {
        match self {
            RouterError::NotFound { .. }
            | RouterError::Topology(_)
            | RouterError::Unsupported { .. }
            | RouterError::Patch { .. } => true,
            RouterError::Api { source, .. } => {
                crate::retry::status_code(source).is_some_and(crate::retry::is_permanent)
            }
        }
    }
}

/// The route a start request resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    /// The canary weight it routes now.
    pub canary_weight: u32,
    /// Fingerprint of the routes a rollout manages (see [`istio::split::route_fingerprint`]).
    pub fingerprint: String,
}

/// Reads and writes canary weights.
pub trait Router: Send + Sync {
    /// Finds and validates the route splitting traffic between the two Services (`route`
    /// names it; `None`: the one in the namespace that routes to the GA Service). Returns its
    /// name, the canary weight it routes now and the fingerprint of its split.
    fn resolve<'a>(
        &'a self,
        namespace: &'a str,
        route: Option<&'a str>,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, RouterError>>;

    /// The route as last seen, from the watch cache when it has it (no API call on a step);
    /// an object the cache lacks is looked up in the API before it is called missing.
    fn observe<'a>(&'a self, route: &'a RouteSplit) -> BoxFuture<'a, RouteView>;

    /// The canary weight, read fresh from the API (used when resuming).
    fn canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
    ) -> BoxFuture<'a, Result<u32, RouterError>>;

    /// Routes `weight` percent to the canary and the rest to GA. Writes nothing when the
    /// weights already match; returns whether it wrote.
    fn set_canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
        weight: u32,
    ) -> BoxFuture<'a, Result<bool, RouterError>>;
}
