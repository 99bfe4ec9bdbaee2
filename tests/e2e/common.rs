//! The end-to-end harness: a cluster with the example workloads (the simulator, or with
//! `STEERER_SUBSTRATE=real` a real control plane from `tests/cluster/up.sh` with the
//! simulator's mesh running against it), a real Prometheus scraping the mesh, and the whole
//! steerer server in-process on `127.0.0.1:0`, reached through the generated client. Also
//! helpers to read the cluster and to wait for a rollout's phase. Every rollout test, and the
//! CLI/interop tests, start from here.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use steerer::v1::rollout_service_client::RolloutServiceClient;
use steerer::v1::{
    GetRolloutRequest, Phase, Rollout, RolloutEvent, StartRolloutRequest, WatchRolloutRequest,
};
use steerer_server::domain::{AnalysisSettings, RouteKind, Strategy};
use steerer_server::{ServerConfig, ServerError};
use steerer_sim::control_plane::{self, ControlPlane};
use steerer_sim::mesh::standalone::{MeshConfig, StandaloneMesh};
use steerer_sim::prometheus::{Prometheus, PrometheusConfig};
use steerer_sim::{Sim, SimConfig, Timing};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// Namespace of the example workloads.
pub const NS: &str = "test";
/// The GA Deployment (and Service, and VirtualService) of the example.
pub const GA: &str = "podinfo";
/// Its canary.
pub const CANARY: &str = "podinfo-canary";

/// The repository's `artifacts/` directory.
pub fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts")
}

/// The kind of the example's route: `STEERER_ROUTE` (`VirtualService`, `HTTPRoute` or
/// `GRPCRoute`, any letter case), VirtualService when unset. Every rollout suite runs for
/// each kind this way, unchanged.
///
/// `STEERER_ROUTE` may also list kinds, comma-separated: each test then takes one of them by
/// its own name (a hash of the test's name picks the position in the list), so one run
/// covers every kind listed, a test each; the same list reversed gives each test the other
/// kind of a pair (which suites tests/run.sh runs so, and where: README.md, Tests).
pub fn route_kind() -> RouteKind {
    let listed = std::env::var("STEERER_ROUTE").unwrap_or_default();
    let kinds: Vec<RouteKind> = listed
        .split(',')
        .map(str::trim)
        .filter(|kind| !kind.is_empty())
        .map(|kind| {
            RouteKind::parse(kind).unwrap_or_else(|| {
                panic!(
                    "STEERER_ROUTE={listed:?}: {kind:?} is not one of {}",
                    RouteKind::supported()
                )
            })
        })
        .collect();
    match kinds.as_slice() {
        [] => RouteKind::VirtualService,
        [kind] => *kind,
        several => {
            // libtest runs each test on a thread named after it.
            let test = std::thread::current()
                .name()
                .filter(|name| name.contains("::"))
                .unwrap_or_else(|| {
                    panic!("STEERER_ROUTE={listed:?} picks a kind per test, but this thread is not a test's")
                })
                .to_owned();
            several[kind_index(&test, several.len())]
        }
    }
}

/// The position in a list of `len` route kinds that the test named `test` takes: FNV-1a of
/// the name, so the choice is the same on every run and machine.
pub fn kind_index(test: &str, len: usize) -> usize {
    let hash = test.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % len as u64).unwrap()
}

/// The example's workloads (podinfo, the files directly in artifacts/workloads/; not the
/// Gateway API example in its `gateway-api/` folder), and its route of `kind`:
/// artifacts/workloads/ has the VirtualService; a Gateway API route comes from
/// tests/fixtures/routes/ instead.
pub fn workloads(kind: RouteKind) -> Vec<PathBuf> {
    let workloads = artifacts().join("workloads");
    if kind == RouteKind::VirtualService {
        return vec![workloads];
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&workloads)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file() && !path.ends_with("podinfo-virtualservice.yaml"))
        .collect();
    files.sort();
    files.push(route_fixture(kind));
    files
}

/// tests/fixtures/routes/podinfo-KIND.yaml: the example's split as a Gateway API route.
pub fn route_fixture(kind: RouteKind) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/routes")
        .join(format!("podinfo-{}.yaml", kind.name().to_ascii_lowercase()))
}

/// What to start.
#[derive(Clone)]
pub struct Options {
    /// Manifests applied when the simulator starts (default: Istio and Gateway API CRDs,
    /// steerer's Rollout CRD, the `test` namespace and the example workloads with their
    /// route of kind `route`).
    pub apply: Vec<PathBuf>,
    /// The kind of the example's route (default: [`route_kind`]).
    pub route: RouteKind,
    /// Synthetic requests per second per VirtualService host.
    pub request_rate: f64,
    /// Simulated time (pod start-up, HPA sync…).
    pub timing: Timing,
    /// The server's configuration; `prometheus_url` is filled in.
    pub server: ServerConfig,
}

impl Default for Options {
    fn default() -> Self {
        let a = artifacts();
        let route = route_kind();
        let mut apply = vec![
            a.join("istio"),
            a.join("gateway-api"),
            a.join("steerer/05-rollouts-crd.yaml"),
            a.join("namespace"),
        ];
        apply.extend(workloads(route));
        Self {
            apply,
            route,
            request_rate: 100.0,
            timing: Timing::fast(),
            server: test_server_config(),
        }
    }
}

/// Server settings for fast tests: 1 s intervals, a 4 s metrics window (a rate() needs two
/// scrapes at Prometheus's 1 s interval), low minimum traffic, and no scale-down delay (the
/// canary goes to zero as soon as traffic is off it; the tests of the delay set one).
pub fn test_server_config() -> ServerConfig {
    ServerConfig {
        defaults: AnalysisSettings {
            strategy: Strategy::Canary {
                step_weight: 10,
                max_weight: 100,
            },
            interval: Duration::from_secs(1),
            success_rate_threshold: 95.0,
            max_failed_checks: 3,
            progress_deadline: Duration::from_secs(30),
            min_request_rate: 0.5,
            ..Default::default()
        },
        metrics_window: Duration::from_secs(4),
        metrics_timeout: Duration::from_secs(3),
        auto_interval: Duration::from_millis(500),
        sync_timeout: Duration::from_secs(10),
        scale_down_delay: Duration::ZERO,
        ..ServerConfig::default()
    }
}

/// A server running on a runtime of its own, on a thread of its own, so that `kill()` can
/// look like the death of a process: dropping that runtime ends every task it ran (the
/// accept loop, each connection, open watches, drivers, watch caches) and closes every socket,
/// where aborting one task would leave the connections it had accepted alive.
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    /// The serve result (`None` when killed), sent once the runtime is gone.
    done: Option<oneshot::Receiver<Option<Result<(), ServerError>>>>,
}

impl ServerHandle {
    /// Graceful shutdown: watches end, drivers stop between steps.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.done.take().unwrap().await.unwrap() {
            Some(result) => result,
            None => panic!("the server was killed while stopping"),
        }
    }

    /// A crash: the server's runtime is dropped wherever its tasks are, so every connection
    /// it had accepted breaks as if the process had died.
    pub async fn kill(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        let _ = self.done.take().unwrap().await;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

/// Where the tests run: `STEERER_SUBSTRATE=real` picks a real control plane, anything else
/// (or nothing) the simulator.
pub fn real_substrate() -> bool {
    std::env::var("STEERER_SUBSTRATE").is_ok_and(|s| s == "real")
}

/// The cluster under a harness.
pub enum Cluster {
    Sim(Sim),
    /// A real control plane, and the simulator's mesh sending traffic by its VirtualServices.
    Real {
        mesh: StandaloneMesh,
        plane: ControlPlane,
    },
}

impl Cluster {
    /// Starts the substrate `STEERER_SUBSTRATE` names, with `options.apply` applied and its
    /// Deployments rolled out.
    pub async fn start(options: &Options) -> Cluster {
        if !real_substrate() {
            let sim = Sim::start(SimConfig {
                timing: options.timing.clone(),
                apply: options.apply.clone(),
                request_rate: options.request_rate,
                ..SimConfig::default()
            })
            .await
            .unwrap();
            return Cluster::Sim(sim);
        }
        let apply = options.apply.clone();
        let plane_options = control_plane::Options {
            pod_startup: options.timing.pod_startup,
            ..Default::default()
        };
        let plane = tokio::task::spawn_blocking(move || {
            let plane = ControlPlane::start(&plane_options).unwrap_or_else(|e| panic!("{e}"));
            for path in &apply {
                plane
                    .kubectl_run(&["apply", "-f", path.to_str().unwrap()])
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let deployments = plane
                .kubectl_run(&["get", "deployments", "-A", "-o", "name"])
                .unwrap();
            if !deployments.trim().is_empty() {
                plane
                    .kubectl_run(&[
                        "wait",
                        "--for=condition=Available",
                        "deployments",
                        "--all",
                        "-A",
                        "--timeout=60s",
                    ])
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            plane
        })
        .await
        .unwrap();
        let mesh = StandaloneMesh::start(MeshConfig {
            kubeconfig: Some(plane.kubeconfig_path().to_owned()),
            request_rate: options.request_rate,
            hpa_sync: options.timing.hpa_sync,
            ..MeshConfig::default()
        })
        .await
        .unwrap();
        Cluster::Real { mesh, plane }
    }

    /// The address Prometheus scrapes for the mesh's Istio metrics.
    pub fn metrics_addr(&self) -> SocketAddr {
        match self {
            Cluster::Sim(sim) => sim.metrics_addr(),
            Cluster::Real { mesh, .. } => mesh.metrics_addr(),
        }
    }

    /// The address serving the mesh's `POST /sim/traffic`: the simulator's API address, or
    /// the standalone mesh's metrics address on a real cluster.
    pub fn traffic_addr(&self) -> SocketAddr {
        match self {
            Cluster::Sim(sim) => sim.api_addr(),
            Cluster::Real { mesh, .. } => mesh.metrics_addr(),
        }
    }

    /// Writes a kubeconfig for the cluster's admin to `path` (for kubectl).
    pub fn write_kubeconfig(&self, path: &Path) {
        match self {
            Cluster::Sim(sim) => sim.write_kubeconfig(path).unwrap(),
            Cluster::Real { plane, .. } => {
                std::fs::copy(plane.kubeconfig_path(), path).unwrap();
            }
        }
    }

    /// How a client reaches the cluster's API.
    pub async fn kube_config(&self) -> kube::Config {
        match self {
            Cluster::Sim(sim) => sim.kube_config().await.unwrap(),
            Cluster::Real { plane, .. } => plane.kube_config().await.unwrap(),
        }
    }
}

/// Simulator (or real cluster) + Prometheus + server + client.
pub struct Harness {
    pub cluster: Cluster,
    pub prometheus: Prometheus,
    pub kube: Client,
    /// How the server reaches the simulator (each server builds its own client from it, on
    /// its own runtime).
    pub kube_config: kube::Config,
    pub config: ServerConfig,
    pub server: Option<ServerHandle>,
    pub client: RolloutServiceClient<Channel>,
    /// The kind of the example's route.
    pub route: RouteKind,
}

impl Harness {
    /// Starts everything with the default options.
    pub async fn start() -> Harness {
        Self::start_with(Options::default()).await
    }

    /// Starts everything.
    pub async fn start_with(options: Options) -> Harness {
        let cluster = Cluster::start(&options).await;
        let prometheus = Prometheus::start(PrometheusConfig::new(
            vec![cluster.metrics_addr()],
            Duration::from_secs(1),
        ))
        .await
        .unwrap();
        if options.request_rate > 0.0 {
            wait_for_series(&prometheus, GA).await;
        }
        let kube_config = cluster.kube_config().await;
        let kube = Client::try_from(kube_config.clone()).unwrap();
        let mut config = options.server.clone();
        config.prometheus_url = prometheus.url();
        let server = start_server(config.clone(), kube_config.clone()).await;
        let client = connect_for(&config, server.addr).await;
        Harness {
            cluster,
            prometheus,
            kube,
            kube_config,
            config,
            server: Some(server),
            client,
            route: options.route,
        }
    }

    /// Kills the server (a crash: its runtime and every connection die), starts a new one on
    /// a new port and reconnects.
    pub async fn crash_and_restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill().await;
        }
        self.restart().await;
    }

    /// Stops the server gracefully, starts a new one and reconnects.
    pub async fn stop_and_restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
        self.restart().await;
    }

    /// Starts a new server (the old one stopped or killed first) and reconnects.
    pub async fn restart(&mut self) {
        let server = start_server(self.config.clone(), self.kube_config.clone()).await;
        self.client = connect_for(&self.config, server.addr).await;
        self.server = Some(server);
    }

    /// The simulator, for a test that drives what only it can (API faults, holds, counts).
    /// Such tests run on the simulator only: tests/run.sh leaves them out on the real control
    /// plane.
    pub fn sim(&self) -> &Sim {
        match &self.cluster {
            Cluster::Sim(sim) => sim,
            Cluster::Real { .. } => {
                panic!("this test drives the simulator itself and cannot run on a real cluster")
            }
        }
    }

    /// Sets the load an HPA follows (1.0 = at target), on either substrate.
    pub async fn set_load(&self, namespace: &str, hpa: &str, load: f64) {
        match &self.cluster {
            Cluster::Sim(sim) => sim.set_load(namespace, hpa, load),
            Cluster::Real { mesh, .. } => mesh.loads().set(namespace, hpa, load),
        }
    }

    /// Overrides a workload's 5xx share (`None` restores its annotation), on either substrate.
    pub async fn set_error_rate(&self, namespace: &str, deployment: &str, rate: Option<f64>) {
        match &self.cluster {
            Cluster::Sim(sim) => sim.set_error_rate(namespace, deployment, rate),
            Cluster::Real { mesh, .. } => mesh.mesh().set_error_rate(namespace, deployment, rate),
        }
    }

    /// Address of the running server.
    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().addr
    }

    /// A start request for the example with the given analysis overrides.
    pub fn request(&self, analysis: steerer::v1::Analysis) -> StartRolloutRequest {
        StartRolloutRequest {
            namespace: NS.into(),
            target: GA.into(),
            analysis: Some(analysis),
            ..Default::default()
        }
    }

    /// Starts a rollout and returns it.
    pub async fn start_rollout(&mut self, request: StartRolloutRequest) -> Rollout {
        self.client
            .start_rollout(request)
            .await
            .unwrap()
            .into_inner()
    }

    /// The rollout now.
    pub async fn get(&mut self, id: &str) -> Rollout {
        self.client
            .get_rollout(GetRolloutRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner()
    }

    /// Polls until the rollout satisfies `f`, failing after `within` with its last state.
    pub async fn wait_until(
        &mut self,
        id: &str,
        within: Duration,
        f: impl Fn(&Rollout) -> bool,
    ) -> Rollout {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let r = self.get(id).await;
            if f(&r) {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rollout {id} did not get there within {within:?}: phase {:?}, weight {}, {}",
                r.phase(),
                r.canary_weight,
                r.message
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the rollout reaches `phase`.
    pub async fn wait_for_phase(&mut self, id: &str, phase: Phase, within: Duration) -> Rollout {
        self.wait_until(id, within, |r| r.phase() == phase).await
    }

    /// Polls until the rollout reaches a terminal phase.
    pub async fn wait_for_end(&mut self, id: &str, within: Duration) -> Rollout {
        self.wait_until(id, within, |r| is_terminal(r.phase()))
            .await
    }

    /// Every event of a rollout from `from`, until the stream ends (after the terminal event).
    pub async fn watch_to_end(
        &mut self,
        id: &str,
        from: u64,
        within: Duration,
    ) -> Vec<RolloutEvent> {
        collect_events(&mut self.client, id, from, within).await
    }

    /// A Deployment of the example namespace.
    pub async fn deployment(&self, name: &str) -> Deployment {
        Api::<Deployment>::namespaced(self.kube.clone(), NS)
            .get(name)
            .await
            .unwrap()
    }

    /// Merge-patches a Deployment of the example namespace.
    pub async fn patch_deployment(&self, name: &str, patch: Value) {
        Api::<Deployment>::namespaced(self.kube.clone(), NS)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// Sets pod-template annotations of a Deployment (a new revision).
    pub async fn annotate_template(&self, name: &str, annotations: Value) {
        self.patch_deployment(
            name,
            json!({"spec": {"template": {"metadata": {"annotations": annotations}}}}),
        )
        .await;
    }

    /// The example route's (GA, canary) weights.
    pub async fn weights(&self) -> (u64, u64) {
        let route = self.route_object().await;
        let split = route.pointer(split_pointer(self.route)).unwrap();
        let weight = |i: usize| split[i]["weight"].as_u64().unwrap_or(0);
        (weight(0), weight(1))
    }

    /// Sets the example route's weights the way a person would, behind steerer's back.
    pub async fn set_weights_by_hand(&self, ga: u32, canary: u32) {
        let mut route = self.route_object().await;
        let split = route.pointer_mut(split_pointer(self.route)).unwrap();
        split[0]["weight"] = json!(ga);
        split[1]["weight"] = json!(canary);
        // A merge patch replaces lists whole: the route's own list of rules or routes.
        let list = if self.route == RouteKind::VirtualService {
            "http"
        } else {
            "rules"
        };
        let patch = json!({"spec": {list: route["spec"][list].clone()}});
        routes(&self.kube, self.route)
            .patch(GA, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// The example route as stored.
    pub async fn route_object(&self) -> Value {
        let route = routes(&self.kube, self.route).get(GA).await.unwrap();
        serde_json::to_value(route).unwrap()
    }

    /// The plural resource name of the example route's kind (`virtualservices`…), as the
    /// simulator counts requests.
    pub fn route_plural(&self) -> &'static str {
        self.route.resource().1
    }

    /// The example route as stored, but for what a rollout may change (the two weights) and
    /// what the API server changes with every write (resourceVersion, generation, managed
    /// fields): a rollout must leave the rest as the user wrote it.
    pub async fn route_but_weights(&self) -> Value {
        let mut route = self.route_object().await;
        if let Some(meta) = route["metadata"].as_object_mut() {
            for field in ["resourceVersion", "generation", "managedFields"] {
                meta.remove(field);
            }
        }
        let split = route.pointer_mut(split_pointer(self.route)).unwrap();
        for backend in split.as_array_mut().into_iter().flatten() {
            if let Some(fields) = backend.as_object_mut() {
                fields.remove("weight");
            }
        }
        route
    }

    /// The example VirtualService as stored.
    pub async fn virtual_service(&self) -> DynamicObject {
        virtual_services(&self.kube).get(GA).await.unwrap()
    }
}

/// Waits until Prometheus has scraped requests served by `workload`: a start checks that
/// the target's workloads are in the metrics, and the mesh needs a moment after the
/// simulator starts before its first requests are scraped.
pub async fn wait_for_series(prometheus: &Prometheus, workload: &str) {
    let query = format!(
        "count(istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"{NS}\",destination_workload=\"{workload}\"}})"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while prometheus.query(&query).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus has no series for {workload} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The example's split within a route's spec: the destinations of a VirtualService's first
/// HTTP route, the backendRefs of the fixtures' second rule.
pub fn split_pointer(kind: RouteKind) -> &'static str {
    match kind {
        RouteKind::VirtualService => "/spec/http/0/route",
        RouteKind::HttpRoute | RouteKind::GrpcRoute => "/spec/rules/1/backendRefs",
    }
}

/// The API of routes of `kind` in the example namespace.
pub fn routes(kube: &Client, kind: RouteKind) -> Api<DynamicObject> {
    if kind == RouteKind::VirtualService {
        return virtual_services(kube);
    }
    let (group, plural) = kind.resource();
    let gvk = GroupVersionKind::gvk(group, "v1", kind.name());
    Api::namespaced_with(
        kube.clone(),
        NS,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// The VirtualService API of the example namespace.
pub fn virtual_services(kube: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
    Api::namespaced_with(kube.clone(), NS, &resource)
}

/// The image of a Deployment's first container.
pub fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// `spec.replicas` of a Deployment.
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().unwrap().replicas.unwrap_or(1)
}

/// Whether a phase is final.
pub fn is_terminal(phase: Phase) -> bool {
    phase.is_terminal()
}

/// Starts the server in-process on `127.0.0.1:0`, on a runtime and thread of its own (see
/// [`ServerHandle`]), with a Kubernetes client of its own built from `kube_config`.
pub async fn start_server(config: ServerConfig, kube_config: kube::Config) -> ServerHandle {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (kill, killed) = oneshot::channel::<()>();
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("steerer-server-{}", addr.port()))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let result = runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                // Counted in the server's metrics, as the binary's client is.
                let kube =
                    steerer_server::telemetry::kube_client(kube_config, &config.telemetry).unwrap();
                let serve = steerer_server::serve(config, listener, kube, async move {
                    let _ = stopped.await;
                });
                tokio::select! {
                    result = serve => Some(result),
                    _ = killed => None,
                }
            });
            // Every task still on the runtime (connections, watches, drivers) dies here.
            runtime.shutdown_timeout(Duration::from_secs(2));
            let _ = done_tx.send(result);
        })
        .unwrap();
    ServerHandle {
        addr,
        stop: Some(stop),
        kill: Some(kill),
        done: Some(done),
    }
}

/// The harness client for a server: connected now, or, for a TLS server (which this plain
/// client cannot talk to), a lazy channel that tests replace with their own TLS client.
pub async fn connect_for(config: &ServerConfig, addr: SocketAddr) -> RolloutServiceClient<Channel> {
    if config.tls.is_some() {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        return RolloutServiceClient::new(channel);
    }
    connect(addr).await
}

/// Connects the generated client.
pub async fn connect(addr: SocketAddr) -> RolloutServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    RolloutServiceClient::new(channel)
}

/// Reads a rollout's events from `from` until one satisfies `stop` (returned last).
pub async fn events_until(
    client: &mut RolloutServiceClient<Channel>,
    id: &str,
    from: u64,
    within: Duration,
    stop: impl Fn(&RolloutEvent) -> bool,
) -> Vec<RolloutEvent> {
    let mut stream = client
        .watch_rollout(WatchRolloutRequest {
            id: id.into(),
            from_sequence: from,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(event))) => {
                let done = stop(&event);
                events.push(event);
                if done {
                    return events;
                }
            }
            Ok(Ok(None)) => return events,
            Ok(Err(status)) => panic!("watch failed: {status}"),
            Err(_) => panic!("no matching event of {id} within {within:?}"),
        }
    }
}

/// Event types in order.
pub fn types(events: &[RolloutEvent]) -> Vec<steerer::v1::EventType> {
    events.iter().map(|e| e.r#type()).collect()
}

/// Follows a rollout's events from `from` until the server ends the stream.
pub async fn collect_events(
    client: &mut RolloutServiceClient<Channel>,
    id: &str,
    from: u64,
    within: Duration,
) -> Vec<RolloutEvent> {
    let mut stream = client
        .watch_rollout(WatchRolloutRequest {
            id: id.into(),
            from_sequence: from,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(event))) => events.push(event),
            Ok(Ok(None)) => return events,
            Ok(Err(status)) => panic!("watch failed: {status}"),
            Err(_) => panic!(
                "watch of {id} did not end within {within:?}; got {:?}",
                events
                    .iter()
                    .map(|e| (e.sequence, e.message.clone()))
                    .collect::<Vec<_>>()
            ),
        }
    }
}
