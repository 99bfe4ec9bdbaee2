//! The routers of a server, one per route kind: the table of kinds this server drives, the
//! start of each kind's router from the server's configuration, and [`Routers`], the
//! [`Router`] the engine holds, which hands each call to the router of the route's kind.
//!
//! A new kind is one module implementing [`KindRouter`] plus one line in [`KINDS`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{
    KindRouter, Resolved, RouteSplit, RouteView, Router, RouterContext, RouterError,
    VIRTUAL_SERVICE,
};

/// Starts the router of one kind.
pub type Start = fn(&RouterContext<'_>) -> Arc<dyn KindRouter>;

/// Every route kind this server drives, with the start of its router.
pub const KINDS: &[(&str, Start)] = &[(VIRTUAL_SERVICE, super::istio::start)];

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
            routers = routers.with(kind, router);
        }
        Ok(routers)
    }
}

/// The routers of a server by route kind: each call goes to the router of its route's kind.
#[derive(Default, Clone)]
pub struct Routers {
    kinds: Vec<(&'static str, Arc<dyn Router>)>,
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
        virtual_service: Option<&'a str>,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, RouterError>> {
        // A start names a VirtualService or none; either way VirtualServices are searched.
        match self.of(VIRTUAL_SERVICE) {
            Ok(router) => router.resolve(namespace, virtual_service, ga_service, canary_service),
            Err(error) => Box::pin(async move { Err(error) }),
        }
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
    use crate::router::fake::FakeRouter;

    fn route() -> RouteSplit {
        RouteSplit {
            namespace: "test".into(),
            kind: crate::domain::RouteKind::VirtualService,
            name: "podinfo".into(),
            ga_service: "podinfo".into(),
            canary_service: "podinfo-canary".into(),
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
        assert_eq!(resolved.name, "podinfo");
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
        assert!(
            routers
                .resolve("test", None, "podinfo", "podinfo-canary")
                .await
                .is_err()
        );
        match routers.observe(&route()).await {
            RouteView::Broken(why) => assert!(why.contains("VirtualService"), "{why}"),
            other => panic!("{other:?}"),
        }
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
