//! An in-memory router for engine tests: holds one canary weight per route and records writes.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{Resolved, RouteKind, RouteRef, RouteSplit, RouteView, Router, RouterError};

/// Weights held in memory, for routes of one kind (VirtualServices unless made otherwise).
pub struct FakeRouter {
    kind: RouteKind,
    state: Mutex<FakeState>,
}

impl Default for FakeRouter {
    fn default() -> Self {
        Self::of_kind(RouteKind::VirtualService)
    }
}

#[derive(Default)]
struct FakeState {
    /// (namespace, virtual service) -> canary weight
    weights: HashMap<(String, String), u32>,
    /// virtual service -> (ga service, canary service)
    routes: HashMap<(String, String), (String, String)>,
    /// virtual service -> fingerprint of its split routes
    fingerprints: HashMap<(String, String), String>,
    writes: Vec<u32>,
    fail_writes: bool,
    /// Every write is refused with this HTTP status and message (a refusal retrying cannot
    /// fix).
    refuse_writes: Option<(u16, String)>,
}

impl FakeRouter {
    /// An empty router of routes of `kind`.
    pub fn of_kind(kind: RouteKind) -> Self {
        Self {
            kind,
            state: Mutex::default(),
        }
    }

    /// Adds a VirtualService splitting `ga`/`canary` at `canary_weight`.
    pub fn add(&self, namespace: &str, vs: &str, ga: &str, canary: &str, canary_weight: u32) {
        if let Ok(mut s) = self.state.lock() {
            let key = (namespace.to_owned(), vs.to_owned());
            s.weights.insert(key.clone(), canary_weight);
            s.routes.insert(key, (ga.to_owned(), canary.to_owned()));
        }
    }

    /// The canary weight of a VirtualService.
    pub fn weight(&self, namespace: &str, vs: &str) -> Option<u32> {
        self.state
            .lock()
            .ok()?
            .weights
            .get(&(namespace.to_owned(), vs.to_owned()))
            .copied()
    }

    /// Every weight written, in order.
    pub fn writes(&self) -> Vec<u32> {
        self.state
            .lock()
            .map(|s| s.writes.clone())
            .unwrap_or_default()
    }

    /// Makes writes fail (an unreachable API server).
    pub fn fail_writes(&self, fail: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.fail_writes = fail;
        }
    }

    /// Makes every write fail with the API server's answer `(status, message)` (for example
    /// a 403), or stop failing (`None`).
    pub fn refuse_writes(&self, error: Option<(u16, String)>) {
        if let Ok(mut s) = self.state.lock() {
            s.refuse_writes = error;
        }
    }

    /// Deletes a VirtualService.
    pub fn remove(&self, namespace: &str, vs: &str) {
        if let Ok(mut s) = self.state.lock() {
            let key = (namespace.to_owned(), vs.to_owned());
            s.weights.remove(&key);
            s.routes.remove(&key);
            s.fingerprints.remove(&key);
        }
    }

    /// Someone else sets the canary weight (not recorded as our write).
    pub fn edit_weight(&self, namespace: &str, vs: &str, canary_weight: u32) {
        if let Ok(mut s) = self.state.lock() {
            s.weights
                .insert((namespace.to_owned(), vs.to_owned()), canary_weight);
        }
    }

    /// Someone else changes the routes' destinations or match conditions.
    pub fn edit_routes(&self, namespace: &str, vs: &str, fingerprint: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.fingerprints.insert(
                (namespace.to_owned(), vs.to_owned()),
                fingerprint.to_owned(),
            );
        }
    }
}

fn fingerprint(s: &FakeState, key: &(String, String)) -> String {
    s.fingerprints
        .get(key)
        .cloned()
        .unwrap_or_else(|| "routes".to_owned())
}

impl Router for FakeRouter {
    fn resolve<'a>(
        &'a self,
        namespace: &'a str,
        route: Option<&'a RouteRef>,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, RouterError>> {
        Box::pin(async move {
            let name = super::named_or_found(self, namespace, route, ga_service, canary_service)
                .await?
                .name;
            let s = self
                .state
                .lock()
                .map_err(|_| RouterError::Topology("poisoned".into()))?;
            let key = (namespace.to_owned(), name.clone());
            match s.routes.get(&key) {
                Some((ga, canary)) if ga == ga_service && canary == canary_service => {
                    Ok(Resolved {
                        canary_weight: s.weights.get(&key).copied().unwrap_or(0),
                        fingerprint: fingerprint(&s, &key),
                        route: RouteRef {
                            kind: self.kind,
                            name,
                        },
                    })
                }
                Some(_) => Err(RouterError::Topology(format!(
                    "{} {namespace}/{name} has no destination for the canary Service {canary_service}",
                    self.kind
                ))),
                None => Err(RouterError::NotFound {
                    kind: self.kind,
                    namespace: namespace.to_owned(),
                    name,
                }),
            }
        })
    }

    fn find<'a>(
        &'a self,
        namespace: &'a str,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RouteRef>, RouterError>> {
        let mut found: Vec<RouteRef> = self
            .state
            .lock()
            .map(|s| {
                s.routes
                    .iter()
                    .filter(|((ns, _), (ga, canary))| {
                        ns == namespace && ga == ga_service && canary == canary_service
                    })
                    .map(|((_, name), _)| RouteRef {
                        kind: self.kind,
                        name: name.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Box::pin(async move { Ok(found) })
    }

    fn canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
    ) -> BoxFuture<'a, Result<u32, RouterError>> {
        let result =
            self.weight(&route.namespace, &route.name)
                .ok_or_else(|| RouterError::NotFound {
                    kind: self.kind,
                    namespace: route.namespace.clone(),
                    name: route.name.clone(),
                });
        Box::pin(async move { result })
    }

    fn observe<'a>(&'a self, route: &'a RouteSplit) -> BoxFuture<'a, RouteView> {
        let view = self
            .state
            .lock()
            .map(|s| {
                let key = (route.namespace.clone(), route.name.clone());
                match s.weights.get(&key) {
                    Some(w) => RouteView::Split {
                        canary_weight: *w,
                        fingerprint: fingerprint(&s, &key),
                    },
                    None => RouteView::Missing,
                }
            })
            .unwrap_or_default();
        Box::pin(async move { view })
    }

    fn set_canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
        weight: u32,
    ) -> BoxFuture<'a, Result<bool, RouterError>> {
        let result = (|| {
            let mut s = self
                .state
                .lock()
                .map_err(|_| RouterError::Topology("poisoned".into()))?;
            let refusal = |source| RouterError::Api {
                kind: self.kind,
                action: "patch weights of",
                namespace: route.namespace.clone(),
                name: route.name.clone(),
                source: Box::new(source),
            };
            if let Some((code, message)) = &s.refuse_writes {
                return Err(refusal(kube::Error::Api(
                    kube::core::Status::failure(message, "Forbidden")
                        .with_code(*code)
                        .boxed(),
                )));
            }
            if s.fail_writes {
                return Err(refusal(kube::Error::Service("connection refused".into())));
            }
            let key = (route.namespace.clone(), route.name.clone());
            if !s.weights.contains_key(&key) {
                return Err(RouterError::NotFound {
                    kind: self.kind,
                    namespace: route.namespace.clone(),
                    name: route.name.clone(),
                });
            }
            if s.weights.get(&key) == Some(&weight) {
                return Ok(false);
            }
            s.weights.insert(key, weight);
            s.writes.push(weight);
            Ok(true)
        })();
        Box::pin(async move { result })
    }
}
