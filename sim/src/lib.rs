//! steerer-sim: a Kubernetes API server with Deployment and HPA controllers and an Istio data
//! plane, all simulated in one process, for tests and demos. Clients reach it through an
//! ordinary kubeconfig and cannot tell it from a cluster. The mesh also runs alone against any
//! API server, a real kube-apiserver included ([`mesh::standalone`], `steerer-sim mesh`).

pub mod admission;
pub mod api;
pub mod auth;
pub mod control_plane;
pub mod controllers;
pub mod error;
pub mod faults;
pub mod kubeconfig;
pub mod managed;
pub mod manifests;
pub mod mesh;
pub mod patch;
pub mod prometheus;
pub mod resources;
pub mod selector;
pub mod store;
pub mod world;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use error::{ApiError, SimError};
pub use faults::Faults;
pub use store::{GroupResource, Store};
pub use world::{SimConfig, Timing, World};

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
        api::create_object(world, &def, "v1", "", ns, false, None).map_err(|e| {
            SimError::Apply {
                path: PathBuf::from("(built-in namespaces)"),
                message: e.to_string(),
            }
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
        let tokens = auth::tokens::TokenIssuer::generate(
            &config.service_account_issuer,
            &config.api_audiences,
        )?;
        let world = Arc::new(World {
            tokens,
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
            tokio::spawn(run_mesh(Arc::clone(&world), shutdown.clone())),
            tokio::spawn(run_controllers(Arc::clone(&world), shutdown.clone())),
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

    /// A token for a service account with any lifetime in seconds (negative: already expired,
    /// though TokenReview allows a minute of leeway, as kube-apiserver does), which the
    /// TokenRequest API would refuse under 10 minutes: for tests of expiry.
    pub fn issue_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[String],
        lifetime_seconds: i64,
    ) -> Result<String, ApiError> {
        api::reviews::issue_unchecked(
            &self.world,
            namespace,
            service_account,
            audiences,
            lifetime_seconds,
        )
        .map(|issued| issued.token)
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

/// Sends the simulator's traffic over its own store until `shutdown` is cancelled.
async fn run_mesh(world: Arc<World>, shutdown: Shutdown) {
    let tick = world.config.timing.traffic_tick;
    mesh::drive(
        mesh::StoreView::new(&world.store),
        &world.mesh,
        tick,
        &shutdown,
    )
    .await;
}

/// Runs the controllers over the simulator's store until `shutdown` is cancelled.
async fn run_controllers(world: Arc<World>, shutdown: Shutdown) {
    let timing = &world.config.timing;
    let intervals = controllers::Intervals {
        pod_startup: timing.pod_startup,
        controller_tick: timing.controller_tick,
        hpa_sync: timing.hpa_sync,
    };
    controllers::run(Arc::clone(&world.store), &world.loads, intervals, shutdown).await;
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}
