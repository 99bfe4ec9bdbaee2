//! steerer-sim: a Kubernetes API server with Deployment and HPA controllers and an Istio data
//! plane, all simulated in one process, for tests and demos. Clients reach it through an
//! ordinary kubeconfig and cannot tell it from a cluster. The mesh also runs alone against any
//! API server, a real kube-apiserver included ([`mesh::standalone`], `steerer-sim mesh`).

pub mod admission;
pub mod api;
pub mod control_plane;
pub mod controllers;
pub mod error;
pub mod faults;
pub mod kubeconfig;
pub mod manifests;
pub mod mesh;
pub mod patch;
pub mod prometheus;
pub mod resources;
pub mod selector;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use error::ApiError;
pub use faults::Faults;
pub use store::{GroupResource, Store};

/// Errors starting or driving the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A listener could not be bound.
    #[error("failed to bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A manifest given with `--apply` could not be read or created.
    #[error("failed to apply {path}: {message}")]
    Apply {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The kubeconfig could not be built or written.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// Any other I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How fast simulated time runs: every delay the simulator plays.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Time a new pod takes to become ready (and an old one to go away) during a rolling
    /// update or a scale-up.
    pub pod_startup: Duration,
    /// How often the Deployment controller reconciles.
    pub controller_tick: Duration,
    /// How often HPAs recompute their desired replicas.
    pub hpa_sync: Duration,
    /// How often the mesh sends a batch of synthetic requests.
    pub traffic_tick: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            pod_startup: Duration::from_secs(2),
            controller_tick: Duration::from_millis(100),
            hpa_sync: Duration::from_secs(2),
            traffic_tick: Duration::from_millis(100),
        }
    }
}

impl Timing {
    /// Fast timing for tests: a rolling update of a few replicas takes about a second.
    pub fn fast() -> Self {
        Self {
            pod_startup: Duration::from_millis(200),
            controller_tick: Duration::from_millis(50),
            hpa_sync: Duration::from_millis(300),
            traffic_tick: Duration::from_millis(100),
        }
    }
}

/// Everything `Sim::start` needs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Kubernetes API address (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Address of `/metrics` (Istio's metrics for Prometheus to scrape).
    pub metrics_listen: SocketAddr,
    /// Manifests (files or directories of `.yaml`/`.yml`/`.json`) created at start-up.
    pub apply: Vec<PathBuf>,
    /// Simulated time.
    pub timing: Timing,
    /// Synthetic requests per second per VirtualService host.
    pub request_rate: f64,
    /// Changes kept for watches to replay from; older resourceVersions get 410 Expired.
    pub history_limit: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            listen: loopback,
            metrics_listen: loopback,
            apply: Vec::new(),
            timing: Timing::default(),
            request_rate: 50.0,
            history_limit: 10_000,
        }
    }
}

/// The shared state of a running simulator: what the API serves, the controllers drive and
/// the mesh reads.
pub struct World {
    /// Every object.
    pub store: Arc<Store>,
    /// Served resources, built-in and from CRDs.
    pub registry: resources::Registry,
    /// Fault injection and request counters of the API.
    pub faults: Faults,
    /// The Istio data plane and its metrics.
    pub mesh: mesh::Mesh,
    /// Load figures HPAs follow.
    pub loads: controllers::Loads,
    /// The configuration it was started with.
    pub config: SimConfig,
}

/// Creates the namespaces every cluster starts with.
fn create_builtin_namespaces(world: &World) -> Result<(), SimError> {
    let Some(def) = world.registry.lookup("", "v1", "namespaces") else {
        return Err(SimError::Apply {
            path: PathBuf::from("(built-in namespaces)"),
            message: "namespaces are not served".into(),
        });
    };
    for name in ["default", "kube-system", "kube-public"] {
        let ns = serde_json::json!({"metadata": {"name": name}});
        api::create_object(world, &def, "v1", "", ns, false).map_err(|e| SimError::Apply {
            path: PathBuf::from("(built-in namespaces)"),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// A running simulator. Dropping it stops every task.
pub struct Sim {
    api_addr: SocketAddr,
    metrics_addr: SocketAddr,
    world: Arc<World>,
    shutdown: Shutdown,
    tasks: Vec<JoinHandle<()>>,
}

pub use tokio_util::sync::CancellationToken as Shutdown;

impl Sim {
    /// Binds both listeners, creates the `--apply` manifests, and starts the API server, the
    /// controllers and the mesh.
    pub async fn start(config: SimConfig) -> Result<Sim, SimError> {
        let api_listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| SimError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let metrics_listener =
            TcpListener::bind(config.metrics_listen)
                .await
                .map_err(|source| SimError::Bind {
                    addr: config.metrics_listen,
                    source,
                })?;
        let api_addr = api_listener.local_addr()?;
        let metrics_addr = metrics_listener.local_addr()?;

        let store = Arc::new(Store::new(config.history_limit));
        let world = Arc::new(World {
            registry: resources::Registry::with_builtins(),
            faults: Faults::default(),
            mesh: mesh::Mesh::new(config.request_rate),
            loads: controllers::Loads::default(),
            store,
            config: config.clone(),
        });
        create_builtin_namespaces(&world)?;
        for path in &config.apply {
            manifests::apply_path(&world, path)?;
        }

        let shutdown = Shutdown::new();
        let tasks = vec![
            tokio::spawn(api::serve(
                api_listener,
                Arc::clone(&world),
                shutdown.clone(),
            )),
            tokio::spawn(mesh::serve_metrics(
                metrics_listener,
                Arc::clone(&world),
                shutdown.clone(),
            )),
            tokio::spawn(mesh::run(Arc::clone(&world), shutdown.clone())),
            tokio::spawn(controllers::run(Arc::clone(&world), shutdown.clone())),
        ];
        Ok(Sim {
            api_addr,
            metrics_addr,
            world,
            shutdown,
            tasks,
        })
    }

    /// Address of the Kubernetes API.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Address of the Istio metrics endpoint (`/metrics`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The kubeconfig (YAML) that points a client at this simulator.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig::render(self.api_addr)
    }

    /// Writes the kubeconfig to a file.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> Result<(), SimError> {
        std::fs::write(path, self.kubeconfig_yaml())?;
        Ok(())
    }

    /// A kube-rs configuration for this simulator, as a kubeconfig would give it.
    pub async fn kube_config(&self) -> Result<kube::Config, SimError> {
        kubeconfig::kube_config(self.api_addr).await
    }

    /// The shared state (store, faults, mesh, loads).
    pub fn world(&self) -> &Arc<World> {
        &self.world
    }

    /// Fault injection and request counters.
    pub fn faults(&self) -> &Faults {
        &self.world.faults
    }

    /// Sets the load figure an HPA follows (1.0 = at target utilisation).
    pub fn set_load(&self, namespace: &str, hpa: &str, load: f64) {
        self.world.loads.set(namespace, hpa, load);
    }

    /// Overrides a Deployment's 5xx rate at run time (`None` returns to its annotation).
    pub fn set_error_rate(&self, namespace: &str, deployment: &str, rate: Option<f64>) {
        self.world.mesh.set_error_rate(namespace, deployment, rate);
    }

    /// Stops every task and waits for them.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}
