//! An in-memory router for engine tests: holds one canary weight per route and records writes.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{Resolved, RouteSplit, RouteView, Router, RouterError};

/// Weights held in memory.
#[derive(Default)]
pub struct FakeRouter {
    state: Mutex<FakeState>,
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
        virtual_service: Option<&'a str>,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, RouterError>> {
        let result = (|| {
            let s = self
                .state
                .lock()
                .map_err(|_| RouterError::Topology("poisoned".into()))?;
            let found = s.routes.iter().find(|((ns, name), (ga, _))| {
                ns == namespace && virtual_service.is_none_or(|v| v == name) && ga == ga_service
            });
            match found {
                Some(((_, name), (_, canary))) if canary == canary_service => {
                    let key = (namespace.to_owned(), name.clone());
                    Ok(Resolved {
                        name: name.clone(),
                        canary_weight: s.weights.get(&key).copied().unwrap_or(0),
                        fingerprint: fingerprint(&s, &key),
                    })
                }
                Some(((_, name), _)) => Err(RouterError::Topology(format!(
                    "VirtualService {namespace}/{name} has no destination for the canary Service {canary_service}"
                ))),
                None => match virtual_service {
                    Some(name) => Err(RouterError::NotFound {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    }),
                    None => Err(RouterError::Topology(format!(
                        "no VirtualService in namespace {namespace} routes to the GA Service {ga_service}"
                    ))),
                },
            }
        })();
        Box::pin(async move { result })
    }

    fn canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
    ) -> BoxFuture<'a, Result<u32, RouterError>> {
        let result =
            self.weight(&route.namespace, &route.name)
                .ok_or_else(|| RouterError::NotFound {
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
