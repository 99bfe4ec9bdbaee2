//! The Istio data plane: synthetic requests from the ingress gateway, split by VirtualService
//! routes and weights to the ready pods behind each destination Service, and the metrics
//! Istio's proxies would export for them.
//!
//! Requests are `GET /` with no headers, except a share of them (10% unless the
//! VirtualService's `sim.steerer.dev/header-share` annotation says otherwise) that carries
//! whatever headers and query parameters the routes' match conditions ask for, so header-based
//! routes get traffic too. Splits are deterministic (smooth weighted round-robin), so tests see
//! exact proportions.

pub mod labels;
pub mod metrics;
pub mod routing;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;

use crate::store::GroupResource;
use crate::{Shutdown, World};
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
    fn rebuild(&mut self, world: &World) {
        let (vss, _) = world.store.list(&virtual_services(), None);
        let (svcs, _) = world.store.list(&services(), None);
        let (rss, _) = world
            .store
            .list(&crate::controllers::deployment::replicasets(), None);
        self.table = routing::build(&vss, &svcs, &rss, DEFAULT_HEADER_SHARE);
        {
            let mut metrics = lock(&world.mesh.metrics);
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
            .flat_map(|r| &r.destinations)
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
                        Some(ep) => {
                            let latency = sample_latency(&mut rng, ep.latency_ms);
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

/// A log-normal latency with the given mean: most requests near it, a tail above.
fn sample_latency(rng: &mut impl rand::Rng, mean_ms: f64) -> f64 {
    const SIGMA: f64 = 0.4;
    if mean_ms <= 0.0 {
        return 0.0;
    }
    let mu = mean_ms.ln() - SIGMA * SIGMA / 2.0;
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (mu + SIGMA * normal).exp()
}

fn relevant(gr: &GroupResource) -> bool {
    *gr == virtual_services()
        || *gr == services()
        || *gr == crate::controllers::deployment::replicasets()
}

/// Sends traffic until `shutdown` is cancelled. The routing table is rebuilt only after a
/// VirtualService, Service or ReplicaSet changed; a tick only walks the table.
pub async fn run(world: Arc<World>, shutdown: Shutdown) {
    let mut changes = world.store.subscribe();
    let mut traffic = Traffic::default();
    let mut dirty = true;
    let mut tick = tokio::time::interval(world.config.timing.traffic_tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            received = changes.recv() => match received {
                Ok(change) => dirty |= relevant(&change.gr),
                Err(RecvError::Lagged(_)) => dirty = true,
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                if dirty {
                    traffic.rebuild(&world);
                    dirty = false;
                }
                let now = Instant::now();
                // A stalled tick does not turn into a burst larger than a second of traffic.
                let elapsed = now.duration_since(last).min(Duration::from_secs(1));
                last = now;
                traffic.tick(&world.mesh, elapsed);
            }
        }
    }
}

/// Serves `GET /metrics` until `shutdown` is cancelled.
pub async fn serve_metrics(listener: TcpListener, world: Arc<World>, shutdown: Shutdown) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let world = Arc::clone(&world);
            async move {
                let body = tokio::task::spawn_blocking(move || world.mesh.render_metrics())
                    .await
                    .unwrap_or_default();
                ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response()
            }
        }),
    );
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(%err, "metrics server failed");
    }
}
