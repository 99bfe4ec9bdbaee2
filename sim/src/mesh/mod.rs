//! The Istio data plane: synthetic requests from the ingress gateway, split by the routes and
//! weights of VirtualServices and Gateway API HTTPRoutes and GRPCRoutes (see [`gateway`]) to
//! the ready pods behind each destination Service, and the metrics Istio's proxies would
//! export for them.
//!
//! Requests are `GET /` with no headers, except a share of them (10% unless the
//! VirtualService's `sim.steerer.dev/header-share` annotation says otherwise) that carries
//! whatever headers and query parameters the routes' match conditions ask for, so header-based
//! routes get traffic too. Once a Service has `POST /sim/traffic` rules ([`traffic`]), those
//! say instead which share of its requests carries which headers and cookies, and routes
//! match on them (exact, prefix, RE2 regex). A route's mirror (Istio's `mirror` and
//! `mirrorPercentage`, the Gateway API's `RequestMirror`) gets a copy of that share of its
//! requests, which it serves and reports while the caller gets the primary's answer. Splits
//! are deterministic (smooth weighted round-robin), so tests see exact proportions.
//!
//! One traffic engine ([`drive`]) runs over a [`ClusterView`]: the simulator's own store
//! ([`run`]), or watch caches of any API server ([`cluster::KubeView`], used by
//! [`standalone`], the `steerer-sim mesh` command).

pub mod autoscale;
pub mod cluster;
pub mod gateway;
pub mod labels;
pub mod metrics;
pub mod routing;
pub mod standalone;
pub mod traffic;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;

use crate::store::{Change, GroupResource, Store};
use tokio_util::sync::CancellationToken as Shutdown;

use metrics::{Metrics, Reporter};
use routing::{ErrorState, HostState, Table};

/// Share of requests carrying the headers a route matches on, unless a VirtualService sets
/// `sim.steerer.dev/header-share`.
pub const DEFAULT_HEADER_SHARE: f64 = 0.1;

/// Content type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `networking.istio.io/virtualservices` resource.
pub fn virtual_services() -> GroupResource {
    GroupResource::new("networking.istio.io", "virtualservices")
}

/// The core `services` resource.
pub fn services() -> GroupResource {
    GroupResource::new("", "services")
}

/// The mesh's run-time controls and its metrics.
#[derive(Debug)]
pub struct Mesh {
    request_rate: f64,
    overrides: Mutex<HashMap<(String, String), f64>>,
    metrics: Mutex<Metrics>,
    traffic: traffic::TrafficRules,
}

impl Mesh {
    /// A mesh sending `request_rate` requests per second per VirtualService host.
    pub fn new(request_rate: f64) -> Self {
        Self {
            request_rate: if request_rate.is_finite() {
                request_rate.max(0.0)
            } else {
                0.0
            },
            overrides: Mutex::new(HashMap::new()),
            metrics: Mutex::new(Metrics::default()),
            traffic: traffic::TrafficRules::default(),
        }
    }

    /// Requests per second per host.
    pub fn request_rate(&self) -> f64 {
        self.request_rate
    }

    /// Overrides a Deployment's error rate (every revision); `None` returns to the
    /// `sim.steerer.dev/error-rate` annotation.
    pub fn set_error_rate(&self, namespace: &str, deployment: &str, rate: Option<f64>) {
        let key = (namespace.to_owned(), deployment.to_owned());
        let mut overrides = lock(&self.overrides);
        match rate {
            Some(rate) if rate.is_finite() => {
                overrides.insert(key, rate.clamp(0.0, 1.0));
            }
            _ => {
                overrides.remove(&key);
            }
        }
    }

    /// The headers and cookies of each Service's synthetic requests (`POST /sim/traffic`).
    pub fn traffic(&self) -> &traffic::TrafficRules {
        &self.traffic
    }

    /// The metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        lock(&self.metrics).render()
    }

    /// Number of metric series recorded so far.
    pub fn series_count(&self) -> usize {
        lock(&self.metrics).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The traffic generator's state across ticks.
#[derive(Default)]
struct Traffic {
    table: Table,
    /// One per entry of `table.hosts`, in the same order.
    hosts: Vec<HostState>,
    /// The keys `hosts` belong to.
    table_keys: Vec<String>,
    errors: ErrorState,
}

impl Traffic {
    fn rebuild(&mut self, snapshot: &Snapshot, mesh: &Mesh) {
        let mut routes = snapshot.virtual_services.clone();
        routes.extend(gateway::as_virtual_services(
            "HTTPRoute",
            &snapshot.http_routes,
        ));
        routes.extend(gateway::as_virtual_services(
            "GRPCRoute",
            &snapshot.grpc_routes,
        ));
        self.table = routing::build(
            &routes,
            &snapshot.services,
            &snapshot.replicasets,
            DEFAULT_HEADER_SHARE,
            &mesh.traffic.snapshot(),
        );
        {
            let mut metrics = lock(&mesh.metrics);
            self.table
                .assign_series(&mut |labels| metrics.intern(labels));
        }
        // Carry each host's fractions and round-robin positions over the rebuild.
        let mut previous: HashMap<&str, HostState> = self
            .table_keys
            .iter()
            .map(String::as_str)
            .zip(std::mem::take(&mut self.hosts))
            .collect();
        self.hosts = self
            .table
            .hosts
            .iter()
            .map(|h| previous.remove(h.key.as_str()).unwrap_or_default())
            .collect();
        drop(previous);
        self.table_keys = self.table.hosts.iter().map(|h| h.key.clone()).collect();
        let endpoints: HashSet<String> = self
            .table
            .hosts
            .iter()
            .flat_map(|h| &h.routes)
            .flat_map(|r| {
                r.destinations
                    .iter()
                    .chain(r.mirror.as_ref().map(|m| &m.destination))
            })
            .filter_map(|d| match &d.target {
                routing::Target::Endpoints(eps) => Some(eps),
                routing::Target::NoCluster => None,
            })
            .flatten()
            .map(|ep| ep.key.clone())
            .collect();
        self.errors.retain(&endpoints);
    }

    fn tick(&mut self, mesh: &Mesh, elapsed: Duration) {
        let overrides = lock(&mesh.overrides).clone();
        let error_override = |ns: &str, workload: &str| {
            if overrides.is_empty() {
                return None;
            }
            overrides
                .get(&(ns.to_owned(), workload.to_owned()))
                .copied()
        };
        let per_host = mesh.request_rate * elapsed.as_secs_f64();
        let mut metrics = lock(&mesh.metrics);
        let mut rng = rand::rng();
        for (entry, state) in self.table.hosts.iter().zip(&mut self.hosts) {
            state.pending += per_host;
            let count = state.pending.floor();
            state.pending -= count;
            let count = count as u64;
            if count == 0 {
                continue;
            }
            state.send(
                entry,
                count,
                &mut self.errors,
                &error_override,
                &mut |outcome| {
                    match outcome.endpoint {
                        // A mirrored copy: only the sidecar that served it reports it.
                        Some(ep) if outcome.mirrored => {
                            let latency =
                                sample_latency(&mut rng, ep.latency_ms, ep.latency_stddev_ms);
                            metrics.record(
                                Reporter::Destination,
                                outcome.series,
                                outcome.code,
                                outcome.flags,
                                latency,
                            );
                        }
                        Some(ep) => {
                            let latency =
                                sample_latency(&mut rng, ep.latency_ms, ep.latency_stddev_ms);
                            metrics.record(
                                Reporter::Destination,
                                outcome.series,
                                outcome.code,
                                outcome.flags,
                                latency,
                            );
                            // The gateway sees the sidecar's time plus its own hop.
                            metrics.record(
                                Reporter::Source,
                                outcome.series,
                                outcome.code,
                                outcome.flags,
                                latency + 0.5,
                            );
                        }
                        None => {
                            // No upstream: only the gateway reports, almost immediately.
                            metrics.record(
                                Reporter::Source,
                                outcome.series,
                                outcome.code,
                                outcome.flags,
                                0.3,
                            );
                        }
                    }
                },
            );
        }
    }
}

/// A log-normal latency with the given mean and standard deviation (`None`: a log-scale
/// spread of 0.4, about 0.42 of the mean): most requests near the mean, a tail above.
fn sample_latency(rng: &mut impl rand::Rng, mean_ms: f64, stddev_ms: Option<f64>) -> f64 {
    const DEFAULT_SIGMA: f64 = 0.4;
    if mean_ms <= 0.0 {
        return 0.0;
    }
    // A log-normal with mean m and standard deviation s has σ² = ln(1 + s²/m²).
    let sigma = stddev_ms
        .map(|s| (1.0 + (s / mean_ms).powi(2)).ln().sqrt())
        .unwrap_or(DEFAULT_SIGMA);
    let mu = mean_ms.ln() - sigma * sigma / 2.0;
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (mu + sigma * normal).exp()
}

/// The objects the routing table is computed from, as JSON.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Every VirtualService.
    pub virtual_services: Vec<Arc<Value>>,
    /// Every Gateway API HTTPRoute (none where the cluster does not serve them).
    pub http_routes: Vec<Arc<Value>>,
    /// Every Gateway API GRPCRoute (none where the cluster does not serve them).
    pub grpc_routes: Vec<Arc<Value>>,
    /// Every Service.
    pub services: Vec<Arc<Value>>,
    /// Every ReplicaSet: pod-template labels and annotations, `status.readyReplicas`.
    pub replicasets: Vec<Arc<Value>>,
}

/// Where the traffic engine reads the cluster from: the simulator's store, or an API server
/// through watch caches.
pub trait ClusterView {
    /// The current routes (VirtualServices, HTTPRoutes, GRPCRoutes), Services and ReplicaSets.
    fn snapshot(&self) -> Snapshot;

    /// Resolves when one of them may have changed since the last call; `false` when the view
    /// ended and will never change again. Cancel-safe.
    fn changed(&mut self) -> impl Future<Output = bool> + Send;
}

/// The simulator's own store as the mesh sees it.
pub struct StoreView<'a> {
    store: &'a Store,
    changes: broadcast::Receiver<Arc<Change>>,
}

impl<'a> StoreView<'a> {
    /// A view of `store` that reports its changes from now on.
    pub fn new(store: &'a Store) -> Self {
        Self {
            store,
            changes: store.subscribe(),
        }
    }
}

impl ClusterView for StoreView<'_> {
    fn snapshot(&self) -> Snapshot {
        let list = |gr: &GroupResource| self.store.list(gr, None).0;
        Snapshot {
            virtual_services: list(&virtual_services()),
            http_routes: list(&gateway::http_routes()),
            grpc_routes: list(&gateway::grpc_routes()),
            services: list(&services()),
            replicasets: list(&crate::controllers::deployment::replicasets()),
        }
    }

    async fn changed(&mut self) -> bool {
        loop {
            match self.changes.recv().await {
                Ok(change) if relevant(&change.gr) => return true,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return true,
                Err(RecvError::Closed) => return false,
            }
        }
    }
}

fn relevant(gr: &GroupResource) -> bool {
    *gr == virtual_services()
        || *gr == gateway::http_routes()
        || *gr == gateway::grpc_routes()
        || *gr == services()
        || *gr == crate::controllers::deployment::replicasets()
}

/// The traffic engine: sends `mesh`'s requests every `traffic_tick` over what `view` shows,
/// until `shutdown` is cancelled or the view ends. The routing table is rebuilt only after
/// the view changed; a tick only walks the table.
pub async fn drive(
    mut view: impl ClusterView,
    mesh: &Mesh,
    traffic_tick: Duration,
    shutdown: &Shutdown,
) {
    let mut traffic = Traffic::default();
    let mut dirty = true;
    let mut traffic_generation = mesh.traffic.generation();
    let mut tick = tokio::time::interval(traffic_tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = view.changed() => {
                if !changed {
                    break;
                }
                dirty = true;
            }
            _ = tick.tick() => {
                let generation = mesh.traffic.generation();
                if generation != traffic_generation {
                    traffic_generation = generation;
                    dirty = true;
                }
                if dirty {
                    traffic.rebuild(&view.snapshot(), mesh);
                    dirty = false;
                }
                let now = Instant::now();
                // A stalled tick does not turn into a burst larger than a second of traffic.
                let elapsed = now.duration_since(last).min(Duration::from_secs(1));
                last = now;
                traffic.tick(mesh, elapsed);
            }
        }
    }
}

impl AsRef<Mesh> for Mesh {
    fn as_ref(&self) -> &Mesh {
        self
    }
}

/// The `GET /metrics` route of `owner`'s mesh.
pub fn metrics_router<M>(owner: Arc<M>) -> Router
where
    M: AsRef<Mesh> + Send + Sync + 'static,
{
    Router::new().route(
        "/metrics",
        get(move || {
            let owner = Arc::clone(&owner);
            async move {
                let body = tokio::task::spawn_blocking(move || {
                    AsRef::<Mesh>::as_ref(&*owner).render_metrics()
                })
                .await
                .unwrap_or_default();
                ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response()
            }
        }),
    )
}

/// Serves `GET /metrics` of `owner`'s mesh until `shutdown` is cancelled.
pub async fn serve_metrics<M>(listener: TcpListener, owner: Arc<M>, shutdown: Shutdown)
where
    M: AsRef<Mesh> + Send + Sync + 'static,
{
    if let Err(err) = axum::serve(listener, metrics_router(owner))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(%err, "metrics server failed");
    }
}
