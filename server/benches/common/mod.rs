//! Shared pieces of the server benchmarks: process measurements (CPU time, resident memory,
//! load), counting in-memory adapters that keep nothing they do not need (so memory figures
//! are the server's own), starting the whole server through `serve_with`, and the gRPC client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::future::BoxFuture;
use serde_json::Value;
use steerer::v1::rollout_service_client::RolloutServiceClient;
use steerer_server::ServerConfig;
use steerer_server::domain::{BaselineSample, Rollout, RolloutEvent, Sample};
use steerer_server::engine::Ports;
use steerer_server::events::Hub;
use steerer_server::metrics::{Coverage, Metrics, MetricsError};
use steerer_server::router::{
    Resolved, RouteKind, RouteRef, RouteSplit, RouteView, Router, RouterError,
};
use steerer_server::store::{Filter, Store, StoreError, Stored};
use steerer_server::webhooks::fake::FakeWebhooks;
use steerer_server::workloads::fake::FakeWorkloads;
use steerer_server::workloads::{DeploymentView, HpaView, WorkloadError, Workloads};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// The allocator the `steerer-server` binary runs on (its `main.rs`), so CPU and memory
/// figures are those of the shipped server.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Namespace of every benchmark workload.
pub const NS: &str = "bench";

/// Clock ticks per second of `/proc/self/stat` (USER_HZ, 100 on every mainstream Linux).
const USER_HZ: f64 = 100.0;

/// A numeric setting from the environment, or its default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) this process has used so far.
pub fn cpu_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may hold spaces; the fields after it are space-separated.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/self/stat")?
            .parse::<f64>()?)
    };
    Ok(Duration::from_secs_f64((ticks(11)? + ticks(12)?) / USER_HZ))
}

/// Resident memory of this process, in KiB (`VmRSS`).
pub fn rss_kib() -> anyhow::Result<u64> {
    status_kib("VmRSS:")
}

/// Peak resident memory of this process, in KiB (`VmHWM`).
pub fn peak_rss_kib() -> anyhow::Result<u64> {
    status_kib("VmHWM:")
}

fn status_kib(key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key} in /proc/self/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("malformed status line")?
        .parse()?)
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU cores of the machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A header line every benchmark prints: what runs where, under which load.
pub fn print_header(name: &str, settings: &[(&str, String)]) {
    println!("== {name} ==");
    println!("machine: {} cores, load average {}", cores(), loadavg());
    for (k, v) in settings {
        println!("  {k} = {v}");
    }
}

/// Whether a figure meets its target, for the printed note.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "meets target" } else { "MISSES target" }
}

/// The `p`-th percentile (0..=100) of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Workloads over `FakeWorkloads` for reads, counting writes and Kubernetes Events without
/// keeping them (a real server sends those to the API and forgets them).
#[derive(Default)]
pub struct BenchWorkloads {
    pub inner: FakeWorkloads,
    pub writes: AtomicU64,
    pub events: AtomicU64,
}

impl BenchWorkloads {
    /// A settled GA Deployment `target` and a settled canary `target-canary` with two
    /// replicas each, the canary on a new image.
    pub fn add_target(&self, target: &str) {
        self.inner
            .put(FakeWorkloads::settled(NS, target, 2, "app:1"));
        self.inner.put(FakeWorkloads::settled(
            NS,
            &format!("{target}-canary"),
            2,
            "app:2",
        ));
    }
}

impl Workloads for BenchWorkloads {
    fn deployment(&self, namespace: &str, name: &str) -> Option<DeploymentView> {
        self.inner.deployment(namespace, name)
    }

    fn hpa_for(&self, namespace: &str, deployment: &str) -> Option<HpaView> {
        self.inner.hpa_for(namespace, deployment)
    }

    fn labelled(&self, key: &str, value: &str) -> Vec<DeploymentView> {
        self.inner.labelled(key, value)
    }

    fn scale<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), WorkloadError>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.scale(namespace, name, replicas)
    }

    fn set_images<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        images: &'a std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), WorkloadError>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.set_images(namespace, name, images)
    }

    fn replace_template<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        template: &'a Value,
    ) -> BoxFuture<'a, Result<(), WorkloadError>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.replace_template(namespace, name, template)
    }

    fn record_event<'a>(
        &'a self,
        _deployment: &'a DeploymentView,
        _rollout: &'a str,
        _reason: &'a str,
        _message: &'a str,
        _warning: bool,
    ) -> BoxFuture<'a, ()> {
        self.events.fetch_add(1, Ordering::Relaxed);
        Box::pin(async {})
    }
}

struct Route {
    ga: String,
    canary: String,
    weight: u32,
}

/// One weight write, when it happened.
#[derive(Debug, Clone)]
pub struct WeightWrite {
    pub at: Instant,
    pub virtual_service: String,
    pub weight: u32,
}

/// A router holding one VirtualService per target (named like the target), counting writes
/// and, when asked, recording when each happened.
#[derive(Default)]
pub struct BenchRouter {
    routes: Mutex<HashMap<String, Route>>,
    pub writes: AtomicU64,
    pub reads: AtomicU64,
    pub record: AtomicBool,
    log: Mutex<Vec<WeightWrite>>,
}

impl BenchRouter {
    /// A VirtualService `target` splitting `target`/`target-canary` at 0.
    pub fn add_target(&self, target: &str) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.insert(
                target.to_owned(),
                Route {
                    ga: target.to_owned(),
                    canary: format!("{target}-canary"),
                    weight: 0,
                },
            );
        }
    }

    /// Recorded writes so far.
    pub fn log(&self) -> Vec<WeightWrite> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Router for BenchRouter {
    fn resolve<'a>(
        &'a self,
        namespace: &'a str,
        route: Option<&'a RouteRef>,
        ga_service: &'a str,
        canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, RouterError>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let name = route.map_or(ga_service, |r| r.name.as_str()).to_owned();
        let result = match self.routes.lock() {
            Ok(routes) => match routes.get(&name) {
                Some(r) if namespace == NS && r.ga == ga_service && r.canary == canary_service => {
                    Ok(Resolved {
                        route: RouteRef::virtual_service(name),
                        canary_weight: r.weight,
                        fingerprint: "bench".to_owned(),
                    })
                }
                _ => Err(RouterError::NotFound {
                    kind: RouteKind::VirtualService,
                    namespace: namespace.to_owned(),
                    name,
                }),
            },
            Err(_) => Err(RouterError::Topology("poisoned".into())),
        };
        Box::pin(async move { result })
    }

    /// The bench names its routes; it is never asked to find one.
    fn find<'a>(
        &'a self,
        _namespace: &'a str,
        _ga_service: &'a str,
        _canary_service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RouteRef>, RouterError>> {
        Box::pin(async move { Ok(Vec::new()) })
    }

    fn canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
    ) -> BoxFuture<'a, Result<u32, RouterError>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let result = self
            .routes
            .lock()
            .ok()
            .and_then(|r| r.get(&route.name).map(|r| r.weight))
            .ok_or_else(|| RouterError::NotFound {
                kind: route.kind,
                namespace: route.namespace.clone(),
                name: route.name.clone(),
            });
        Box::pin(async move { result })
    }

    /// A watch-cache read in the real router: not counted as an API read.
    fn observe<'a>(&'a self, route: &'a RouteSplit) -> BoxFuture<'a, RouteView> {
        let view = match self.routes.lock() {
            Ok(routes) => match routes.get(&route.name) {
                Some(r) => RouteView::Split {
                    canary_weight: r.weight,
                    fingerprint: "bench".to_owned(),
                },
                None => RouteView::Missing,
            },
            Err(_) => RouteView::Unknown,
        };
        Box::pin(async move { view })
    }

    fn set_canary_weight<'a>(
        &'a self,
        route: &'a RouteSplit,
        weight: u32,
    ) -> BoxFuture<'a, Result<bool, RouterError>> {
        let at = Instant::now();
        let result = match self.routes.lock() {
            Ok(mut routes) => match routes.get_mut(&route.name) {
                Some(r) if r.weight == weight => Ok(false),
                Some(r) => {
                    r.weight = weight;
                    Ok(true)
                }
                None => Err(RouterError::NotFound {
                    kind: route.kind,
                    namespace: route.namespace.clone(),
                    name: route.name.clone(),
                }),
            },
            Err(_) => Err(RouterError::Topology("poisoned".into())),
        };
        if matches!(result, Ok(true)) {
            self.writes.fetch_add(1, Ordering::Relaxed);
            if self.record.load(Ordering::Relaxed)
                && let Ok(mut log) = self.log.lock()
            {
                log.push(WeightWrite {
                    at,
                    virtual_service: route.name.clone(),
                    weight,
                });
            }
        }
        Box::pin(async move { result })
    }
}

/// One metrics query, when it was answered and whether the canary was failing.
#[derive(Debug, Clone)]
pub struct Query {
    pub at: Instant,
    pub workload: String,
    pub failing: bool,
}

/// Metrics answering a healthy sample for every canary unless told it fails; counts
/// queries and, when asked, records when each was answered.
#[derive(Default)]
pub struct BenchMetrics {
    failing: Mutex<HashMap<String, Sample>>,
    pub queries: AtomicU64,
    pub record: AtomicBool,
    log: Mutex<Vec<Query>>,
}

impl BenchMetrics {
    /// Makes a canary answer a 50% success rate from now on.
    pub fn fail(&self, workload: &str) {
        if let Ok(mut f) = self.failing.lock() {
            f.insert(
                workload.to_owned(),
                Sample {
                    success_rate: Some(50.0),
                    request_rate: Some(50.0),
                    latency_p99_ms: None,
                },
            );
        }
    }

    /// Recorded queries so far.
    pub fn log(&self) -> Vec<Query> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Metrics for BenchMetrics {
    /// Every workload is reported (the check a start makes; not counted as an analysis query).
    fn coverage<'a>(
        &'a self,
        _observer: &'a str,
        _namespace: &'a str,
        workloads: &'a [String],
        _lookback: Duration,
    ) -> BoxFuture<'a, Result<Coverage, MetricsError>> {
        let coverage = Coverage {
            reported: workloads.to_vec(),
            scraping: true,
        };
        Box::pin(async move { Ok(coverage) })
    }

    fn sample<'a>(
        &'a self,
        _observer: &'a str,
        _namespace: &'a str,
        workload: &'a str,
        _window: Duration,
        _latency: bool,
    ) -> BoxFuture<'a, Result<Sample, MetricsError>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let failing = self
            .failing
            .lock()
            .ok()
            .and_then(|f| f.get(workload).copied());
        if self.record.load(Ordering::Relaxed)
            && let Ok(mut log) = self.log.lock()
        {
            log.push(Query {
                at: Instant::now(),
                workload: workload.to_owned(),
                failing: failing.is_some(),
            });
        }
        let sample = failing.unwrap_or(Sample {
            success_rate: Some(100.0),
            request_rate: Some(50.0),
            latency_p99_ms: None,
        });
        Box::pin(async move { Ok(sample) })
    }

    /// The benches' rollouts are judged by fixed bounds, never against a baseline.
    fn baseline_sample<'a>(
        &'a self,
        _observer: &'a str,
        _namespace: &'a str,
        _canary: &'a str,
        _baseline: &'a str,
        _window: Duration,
    ) -> BoxFuture<'a, Result<BaselineSample, MetricsError>> {
        Box::pin(async { Ok(BaselineSample::default()) })
    }

    /// The benches' rollouts check no metric templates.
    fn value<'a>(&'a self, _promql: &'a str) -> BoxFuture<'a, Result<Option<f64>, MetricsError>> {
        Box::pin(async { Ok(None) })
    }
}

/// A store that counts writes and keeps nothing (the real one keeps state in the API
/// server, not in the process).
#[derive(Default)]
pub struct BenchStore {
    pub creates: AtomicU64,
    pub writes: AtomicU64,
}

impl Store for BenchStore {
    fn load_active(&self) -> BoxFuture<'_, Result<Vec<Stored>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn list<'a>(&'a self, _filter: &'a Filter) -> BoxFuture<'a, Result<Vec<Rollout>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn get<'a>(
        &'a self,
        _namespace: &'a str,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    fn find<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<Option<Stored>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    fn delete<'a>(
        &'a self,
        _namespace: &'a str,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async { Ok(false) })
    }

    fn create<'a>(
        &'a self,
        _rollout: &'a Rollout,
        _events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.creates.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }

    fn append<'a>(
        &'a self,
        _rollout: &'a Rollout,
        _events: &'a [RolloutEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// The counting adapters of one benchmark.
#[derive(Clone, Default)]
pub struct World {
    pub workloads: Arc<BenchWorkloads>,
    pub router: Arc<BenchRouter>,
    pub metrics: Arc<BenchMetrics>,
    pub store: Arc<BenchStore>,
}

impl World {
    /// Targets `t00000`, `t00001`, … each with GA, canary and VirtualService.
    pub fn with_targets(n: usize) -> Self {
        let world = Self::default();
        // Memory figures are the server's: the fake keeps no log of the calls it gets.
        world.workloads.inner.quiet();
        for i in 0..n {
            let t = target(i);
            world.workloads.add_target(&t);
            world.router.add_target(&t);
        }
        world
    }

    fn ports(&self) -> Ports {
        Ports {
            workloads: self.workloads.clone(),
            router: self.router.clone(),
            metrics: self.metrics.clone(),
            store: self.store.clone(),
            webhooks: Arc::new(FakeWebhooks::default()),
            // As the server keeps it: the newest events of active rollouts only.
            hub: Hub::with_limit(steerer_server::events::DEFAULT_MEMORY_EVENTS),
            telemetry: Default::default(),
            // As the server has it: each driver waits on its objects' changes (the fakes
            // announce none).
            changes: Some(steerer_server::cache::Changes::default()),
        }
    }
}

/// Name of the `i`-th target.
pub fn target(i: usize) -> String {
    format!("t{i:05}")
}

/// The whole server (gRPC API, supervisor, drivers, events hub) over the world's adapters,
/// on `127.0.0.1:0`.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<Result<(), steerer_server::ServerError>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    pub async fn start(world: &World) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = ServerConfig {
            // Not used: metrics come from the in-memory adapter.
            prometheus_url: "http://127.0.0.1:9".into(),
            // The in-memory metrics need no rate() window: checks start one interval after
            // each rollout's first step, as with a window no longer than the interval.
            metrics_window: Duration::from_secs(1),
            // What is measured ends when traffic leaves the canary; the scale-down follows.
            scale_down_delay: Duration::ZERO,
            // The benches time the steps themselves (`watch_fanout` spreads them over the
            // interval or not, STEERER_BENCH_STAGGER); shared check ticks would line every
            // rollout's steps up. STEERER_BENCH_CHECK_TICK (seconds) turns them on.
            check_tick: Duration::from_secs_f64(env_or("STEERER_BENCH_CHECK_TICK", 0.0)),
            ..ServerConfig::default()
        };
        let task = tokio::spawn(steerer_server::serve_with(
            config,
            listener,
            world.ports(),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            addr,
            task,
            stop: Some(stop),
        })
    }

    /// Graceful shutdown, bounded in time.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// A gRPC client on its own HTTP/2 connection, retrying until the server listens.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<RolloutServiceClient<Channel>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            Ok(channel) => return Ok(RolloutServiceClient::new(channel)),
            Err(e) if Instant::now() > deadline => bail!("cannot connect to {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A start request for a target with the given interval and step (max weight 100).
pub fn start_request(
    target: &str,
    interval: Duration,
    step_weight: u32,
    max_failed_checks: u32,
) -> steerer::v1::StartRolloutRequest {
    steerer::v1::StartRolloutRequest {
        namespace: NS.into(),
        target: target.into(),
        analysis: Some(steerer::v1::Analysis {
            step_weight: Some(step_weight),
            max_weight: Some(100),
            interval: Some(prost_types::Duration {
                seconds: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(interval.subsec_nanos()).unwrap_or(0),
            }),
            success_rate_threshold: Some(99.0),
            max_failed_checks: Some(max_failed_checks),
            progress_deadline: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            min_request_rate: Some(1.0),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Starts rollouts of targets `0..n` through the API, `concurrency` requests at a time;
/// returns their ids in target order.
pub async fn start_rollouts(
    client: &RolloutServiceClient<Channel>,
    n: usize,
    concurrency: usize,
    request: impl Fn(usize) -> steerer::v1::StartRolloutRequest,
) -> anyhow::Result<Vec<String>> {
    use futures::StreamExt;
    let requests: Vec<_> = (0..n).map(request).collect();
    let results: Vec<anyhow::Result<String>> = futures::stream::iter(requests)
        .map(|r| {
            let mut c = client.clone();
            async move { Ok(c.start_rollout(r).await?.into_inner().id) }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Formats KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
