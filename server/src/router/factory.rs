//! The routers of a server, one per route kind: the table of kinds this server drives, the
//! start of each kind's router from the server's configuration, and [`Routers`], the
//! [`Router`] the engine holds, which hands each call to the router of the route's kind.
//!
//! A new kind is one module implementing [`KindRouter`] plus one line in [`KINDS`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{
    GRPC_ROUTE, HTTP_ROUTE, KindRouter, Resolved, RouteRef, RouteSplit, RouteView, Router,
    RouterContext, RouterError, VIRTUAL_SERVICE,
};

/// Starts the router of one kind.
pub type Start = fn(&RouterContext<'_>) -> Arc<dyn KindRouter>;

/// Every route kind this server drives, with the start of its router.
pub const KINDS: &[(&str, Start)] = &[
    (VIRTUAL_SERVICE, super::istio::start),
    (HTTP_ROUTE, super::gateway::start_http),
    (GRPC_ROUTE, super::gateway::start_grpc),
];

/// Errors starting the routers.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A kind's watch cache did not fill within the sync timeout.
    #[error("{kind}s: {reason}")]
    Sync { kind: &'static str, reason: String },
}

/// Starts the router of every kind in [`KINDS`]: their watch caches begin filling now.
pub fn start(context: &RouterContext<'_>) -> Started {
    Started {
        kinds: KINDS
            .iter()
            .map(|(kind, start)| (*kind, start(context)))
            .collect(),
    }
}

/// The routers of every kind, started, their caches filling.
pub struct Started {
    kinds: Vec<(&'static str, Arc<dyn KindRouter>)>,
}

impl Started {
    /// Waits (up to `timeout` each) until every router's cache is filled.
    pub async fn ready(self, timeout: Duration) -> Result<Routers, StartError> {
        let mut routers = Routers::default();
        for (kind, router) in self.kinds {
            router
                .wait_ready(timeout)
                .await
                .map_err(|reason| StartError::Sync { kind, reason })?;
            if !router.serves() {
                routers.unserved.push(kind);
            }
            routers = routers.with(kind, router);
        }
        Ok(routers)
    }
}

/// The routers of a server by route kind: each call goes to the router of its route's kind.
#[derive(Default, Clone)]
pub struct Routers {
    kinds: Vec<(&'static str, Arc<dyn Router>)>,
    /// Kinds whose CRD the cluster did not serve at start-up.
    unserved: Vec<&'static str>,
}

impl Routers {
    /// Routes of `kind` go to `router` (replacing any router the kind had).
    pub fn with(mut self, kind: &'static str, router: Arc<dyn Router>) -> Self {
        self.kinds.retain(|(k, _)| *k != kind);
        self.kinds.push((kind, router));
        self
    }

    /// The kinds it drives, in the order added.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|(kind, _)| *kind).collect()
    }

    /// The kinds it drives that the cluster served at start-up, in the order added.
    pub fn served_kinds(&self) -> Vec<&'static str> {
        self.kinds
            .iter()
            .map(|(kind, _)| *kind)
            .filter(|kind| !self.unserved.contains(kind))
            .collect()
    }

    fn of(&self, kind: &str) -> Result<&dyn Router, RouterError> {
        self.kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, router)| router.as_ref())
            .ok_or_else(|| RouterError::Unsupported {
                kind: kind.to_owned(),
            })
    }
}

impl Router for Routers {
    fn resolve<'a>(
        &'a self,
        namespace: &'a str,
        route: Option<&'a RouteRef>,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, RouterError>> {
        Box::pin(async move {
            let route =
                super::named_or_found(self, namespace, route, ga_service, canary_service).await?;
            let router = self.of(route.kind.name())?;
            router
                .resolve(namespace, Some(&route), ga_service, canary_service)
                .await
        })
    }

    /// The routes of every kind: a kind the cluster does not serve has none.
    fn find<'a>(
        &'a self,
        namespace: &'a str,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RouteRef>, RouterError>> {
        Box::pin(async move {
            let mut found = Vec::new();
            for (_, router) in &self.kinds {
                found.extend(router.find(namespace, ga_service, canary_service).await?);
            }
            Ok(found)
        })
    }

    fn observe<'a>(&'a self, route: &'a RouteSplit) -> BoxFuture<'a, RouteView> {
        match self.of(route.kind()) {
            Ok(router) => router.observe(route),
            Err(error) => Box::pin(async move { RouteView::Broken(error.to_string()) }),
        }
    }

    fn canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
    ) -> BoxFuture<'a, Result<u32, RouterError>> {
        match self.of(route.kind()) {
            Ok(router) => router.canary_weight(route),
            Err(error) => Box::pin(async move { Err(error) }),
        }
    }

    fn set_canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
        weight: u32,
    ) -> BoxFuture<'a, Result<bool, RouterError>> {
        match self.of(route.kind()) {
            Ok(router) => router.set_canary_weight(route, weight),
            Err(error) => Box::pin(async move { Err(error) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::RouteKind;
    use crate::router::fake::FakeRouter;

    fn route() -> RouteSplit {
        RouteSplit {
            namespace: "test".into(),
            kind: crate::domain::RouteKind::VirtualService,
            name: "podinfo".into(),
            ga_service: "podinfo".into(),
            canary_service: "podinfo-canary".into(),
            matches: Vec::new(),
        }
    }

    #[tokio::test]
    async fn each_call_goes_to_the_router_of_the_routes_kind() {
        let istio = Arc::new(FakeRouter::default());
        istio.add("test", "podinfo", "podinfo", "podinfo-canary", 0);
        let routers = Routers::default().with(VIRTUAL_SERVICE, istio.clone());
        assert_eq!(routers.kinds(), [VIRTUAL_SERVICE]);
        let resolved = routers
            .resolve("test", None, "podinfo", "podinfo-canary")
            .await
            .unwrap();
        assert_eq!(resolved.route, RouteRef::virtual_service("podinfo"));
        assert!(routers.set_canary_weight(&route(), 30).await.unwrap());
        assert_eq!(istio.writes(), [30]);
        assert_eq!(routers.canary_weight(&route()).await.unwrap(), 30);
        assert!(matches!(
            routers.observe(&route()).await,
            RouteView::Split { .. }
        ));
    }

    #[tokio::test]
    async fn a_route_of_a_kind_without_a_router_is_refused_and_nothing_is_written() {
        let other = Arc::new(FakeRouter::default());
        other.add("test", "podinfo", "podinfo", "podinfo-canary", 0);
        let routers = Routers::default().with("HTTPRoute", other.clone());
        let refused = routers.set_canary_weight(&route(), 30).await.unwrap_err();
        assert!(matches!(&refused, RouterError::Unsupported { kind } if kind == VIRTUAL_SERVICE));
        assert!(refused.is_permanent());
        assert!(other.writes().is_empty());
        assert!(routers.canary_weight(&route()).await.is_err());
        let named = RouteRef::virtual_service("podinfo");
        assert!(
            routers
                .resolve("test", Some(&named), "podinfo", "podinfo-canary")
                .await
                .is_err()
        );
        match routers.observe(&route()).await {
            RouteView::Broken(why) => assert!(why.contains("VirtualService"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    fn two_kinds() -> (Arc<FakeRouter>, Arc<FakeRouter>, Routers) {
        let istio = Arc::new(FakeRouter::default());
        let gateway = Arc::new(FakeRouter::of_kind(RouteKind::HttpRoute));
        let routers = Routers::default()
            .with(VIRTUAL_SERVICE, istio.clone())
            .with(HTTP_ROUTE, gateway.clone());
        (istio, gateway, routers)
    }

    #[tokio::test]
    async fn a_start_naming_no_route_finds_the_one_route_of_any_kind_sending_to_both() {
        let (istio, gateway, routers) = two_kinds();
        istio.add("test", "ga-only", "podinfo", "other-canary", 0);
        gateway.add("test", "cart", "podinfo", "podinfo-canary", 20);
        let resolved = routers
            .resolve("test", None, "podinfo", "podinfo-canary")
            .await
            .unwrap();
        assert_eq!(
            resolved.route,
            RouteRef {
                kind: RouteKind::HttpRoute,
                name: "cart".into()
            }
        );
        assert_eq!(resolved.canary_weight, 20);
    }

    #[tokio::test]
    async fn a_start_naming_no_route_is_refused_when_none_or_several_send_to_both() {
        let (istio, gateway, routers) = two_kinds();
        let none = routers
            .resolve("test", None, "podinfo", "podinfo-canary")
            .await
            .unwrap_err();
        assert!(
            none.to_string().starts_with(
                "no route in namespace test sends traffic to both podinfo and podinfo-canary"
            ),
            "{none}"
        );
        istio.add("test", "podinfo", "podinfo", "podinfo-canary", 0);
        gateway.add("test", "podinfo", "podinfo", "podinfo-canary", 0);
        let several = routers
            .resolve("test", None, "podinfo", "podinfo-canary")
            .await
            .unwrap_err();
        assert!(matches!(several, RouterError::Topology(_)));
        assert!(
            several
                .to_string()
                .contains("(virtualservice/podinfo, httproute/podinfo); name one in route"),
            "{several}"
        );
        assert!(istio.writes().is_empty() && gateway.writes().is_empty());
    }

    #[test]
    fn a_kind_added_again_replaces_its_router() {
        let routers = Routers::default()
            .with(VIRTUAL_SERVICE, Arc::new(FakeRouter::default()))
            .with("HTTPRoute", Arc::new(FakeRouter::default()))
            .with(VIRTUAL_SERVICE, Arc::new(FakeRouter::default()));
        assert_eq!(routers.kinds(), ["HTTPRoute", VIRTUAL_SERVICE]);
    }

    #[test]
    fn every_kind_has_one_router() {
        let mut kinds: Vec<&str> = KINDS.iter().map(|(kind, _)| *kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), KINDS.len());
    }
}
