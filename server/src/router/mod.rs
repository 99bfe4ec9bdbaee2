//! Traffic routing: the `Router` trait the engine moves weights through, and its errors.
//! Implementations, one per route kind: `istio` (VirtualService weights), `gateway`
//! (HTTPRoute and GRPCRoute weights), both a `patched::PatchRouter` over their own rules;
//! `fake` for tests; `ab` the A/B rules all kinds share. `factory` starts the router of each
//! kind and picks the one for each rollout's route, or finds the route when a start names none.

pub mod ab;
pub mod factory;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod gateway;
pub mod istio;
pub mod patched;

use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::cache::Changes;

pub use crate::domain::views::RouteView;
pub use crate::domain::{RequestMatch, RouteKind, RouteRef};

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
    /// An A/B test's matches (empty for a weighted canary): a canary weight above 0 puts a
    /// rule sending the requests matching any of them to the canary ahead of each split.
    pub matches: Vec<RequestMatch>,
}

/// The kind of route Istio's router drives.
pub const VIRTUAL_SERVICE: &str = "VirtualService";
/// The Gateway API kinds the gateway router drives.
pub const HTTP_ROUTE: &str = "HTTPRoute";
pub const GRPC_ROUTE: &str = "GRPCRoute";

impl RouteSplit {
    /// The split of `state`'s route between its GA and canary Services.
    pub fn of(state: &crate::domain::Rollout) -> Self {
        RouteSplit {
            namespace: state.namespace.clone(),
            kind: state.route.kind,
            name: state.route.name.clone(),
            ga_service: state.target.clone(),
            canary_service: state.canary.clone(),
            matches: state.analysis.strategy.matches().to_vec(),
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
    /// Whether the cluster serves the kind (known once ready: its CRD may be missing).
    fn serves(&self) -> bool;
}

/// Errors resolving or writing routes.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: RouteKind,
        namespace: String,
        name: String,
    },
    /// The route exists but does not split traffic the way a rollout needs.
    #[error("{0}")]
    Topology(String),
    /// No router of this server drives routes of this kind.
    #[error("this server has no router for routes of kind {kind}")]
    Unsupported { kind: String },
    /// The cluster does not serve the kind: its CRD is not installed.
    #[error(
        "the cluster does not serve {kind}s: the CustomResourceDefinition {} is missing",
        kind.crd()
    )]
    Unserved { kind: RouteKind },
    #[error("failed to {action} {kind} {namespace}/{name}: {source}")]
    Api {
        kind: RouteKind,
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The weight patch computed for the route is not a valid JSON patch.
    #[error("invalid weight patch for {kind} {namespace}/{name}: {source}")]
    Patch {
        kind: RouteKind,
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
            | RouterError::Unserved { .. }
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
    pub route: RouteRef,
    /// The canary weight it routes now.
    pub canary_weight: u32,
    /// Fingerprint of the rules a rollout manages (see [`patched::Rules::fingerprint`]).
    pub fingerprint: String,
}

/// The route a start drives: the one it names, else the one `router` finds (see [`pick`]).
pub async fn named_or_found<R: Router + ?Sized>(
    router: &R,
    namespace: &str,
    route: Option<&RouteRef>,
    ga_service: &str,
    canary_service: &str,
) -> Result<RouteRef, RouterError> {
    match route {
        Some(route) => Ok(route.clone()),
        None => {
            let found = router.find(namespace, ga_service, canary_service).await?;
            pick(namespace, ga_service, canary_service, found)
        }
    }
}

/// The route a start that names none uses: the one `found` (routes sending traffic to both
/// Services). None, or several, is refused with what was found.
pub fn pick(
    namespace: &str,
    ga_service: &str,
    canary_service: &str,
    mut found: Vec<RouteRef>,
) -> Result<RouteRef, RouterError> {
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(RouterError::Topology(format!(
            "no route in namespace {namespace} sends traffic to both {ga_service} and {canary_service} (looked for {}); create one or name it in route",
            RouteKind::supported()
        ))),
        _ => {
            let names: Vec<String> = found.iter().map(RouteRef::slashed).collect();
            Err(RouterError::Topology(format!(
                "several routes in namespace {namespace} send traffic to both {ga_service} and {canary_service} ({}); name one in route",
                names.join(", ")
            )))
        }
    }
}

/// Reads and writes canary weights.
pub trait Router: Send + Sync {
    /// Finds and validates the route splitting traffic between the two Services (`route`
    /// names it; `None`: the one in the namespace that sends traffic to both, see [`pick`]).
    /// Returns it, the canary weight it routes now and the fingerprint of its split.
    fn resolve<'a>(
        &'a self,
        namespace: &'a str,
        route: Option<&'a RouteRef>,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, RouterError>>;

    /// Every route in the namespace with a rule sending traffic to both Services, by name.
    fn find<'a>(
        &'a self,
        namespace: &'a str,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RouteRef>, RouterError>>;

    /// The route as last seen, from the watch cache when it has it (no API call on a step);
    /// an object the cache lacks is looked up in the API before it is called missing.
    fn observe<'a>(&'a self, route: &'a RouteSplit) -> BoxFuture<'a, RouteView>;

    /// The canary weight, read fresh from the API (used when resuming).
    fn canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
    ) -> BoxFuture<'a, Result<u32, RouterError>>;

    /// Routes `weight` percent to the canary and the rest to GA; for an A/B test (the route's
    /// `matches`), puts steerer's rule in (a weight above 0) or takes it out (0), GA keeping
    /// the unmatched traffic. Writes nothing when the route is already so; returns whether it
    /// wrote.
    fn set_canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
        weight: u32,
    ) -> BoxFuture<'a, Result<bool, RouterError>>;
}
