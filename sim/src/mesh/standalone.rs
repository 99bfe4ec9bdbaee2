//! The mesh apart from the simulated API (`steerer-sim mesh`): the traffic engine over watch
//! caches of any API server (a real kube-apiserver or a simulator), serving on one address
//! `/metrics` and the run-time controls `/sim/error-rate`, `/sim/load` and `/sim/traffic`.
//!
//! | request | body | effect |
//! |---|---|---|
//! | `GET /metrics` | | `istio_requests_total`, `istio_request_duration_milliseconds` |
//! | `GET /sim` | | this list, as text |
//! | `POST /sim/error-rate` | `{"namespace": "test", "deployment": "podinfo-canary", "rate": 0.2}` (`null` restores the annotation) | overrides a workload's 5xx rate |
//! | `POST /sim/load` | `{"namespace": "test", "hpa": "podinfo-canary", "load": 2.0}` | drives that HPA through the API (see [`super::autoscale`]) |
//! | `POST /sim/traffic` | `{"namespace": "test", "service": "podinfo", "share": 0.3, "headers"?: {…}, "cookies"?: {…}}` or `{"namespace", "service", "clear": true}` | headers and cookies of a share of that Service's requests (see [`super::traffic`]) |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http::{StatusCode, header};
use kube::Client;
use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::cluster::{KubeView, Scope, ViewError};
use super::{Mesh, autoscale, drive, metrics_router};
use crate::api::admin::{parse_error_rate, parse_load};
use crate::controllers::Loads;
use tokio_util::sync::CancellationToken as Shutdown;

const HELP: &str = "steerer-sim mesh endpoints:
GET    /metrics                    Istio request metrics
POST   /sim/error-rate             {\"namespace\", \"deployment\", \"rate\": number|null}
POST   /sim/load                   {\"namespace\", \"hpa\", \"load\"}
POST   /sim/traffic                {\"namespace\", \"service\", \"share\", \"headers\"?, \"cookies\"?} or {\"namespace\", \"service\", \"clear\": true}
";

/// Everything [`StandaloneMesh::start`] needs.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The kubeconfig of the API server (`None`: `$KUBECONFIG`, `~/.kube/config` or in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// Address of `/metrics` and `/sim/*` (port 0 picks a free one).
    pub metrics_listen: SocketAddr,
    /// Synthetic requests per second per VirtualService host.
    pub request_rate: f64,
    /// The namespace and VirtualService version watched.
    pub scope: Scope,
    /// How often a batch of requests is sent.
    pub traffic_tick: Duration,
    /// How often HPAs with a `/sim/load` figure are synced.
    pub hpa_sync: Duration,
    /// How long the watch caches may take to hold their first lists.
    pub sync_timeout: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            request_rate: 50.0,
            scope: Scope::default(),
            traffic_tick: Duration::from_millis(100),
            hpa_sync: Duration::from_secs(2),
            sync_timeout: Duration::from_secs(30),
        }
    }
}

/// Errors starting the standalone mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The metrics listener could not be bound.
    #[error("failed to bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The kubeconfig given could not be read or used.
    #[error("failed to load the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KubeconfigError,
    },
    /// No kubeconfig was given and none could be inferred.
    #[error("failed to infer a Kubernetes configuration: {0}")]
    Infer(#[source] InferConfigError),
    /// The client could not be built from the configuration.
    #[error("failed to build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The watch caches could not start.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The watch caches did not sync in time.
    #[error("the watch caches did not hold their first lists within {0:?}")]
    SyncTimeout(Duration),
    /// Any other I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running standalone mesh. Dropping it stops every task.
pub struct StandaloneMesh {
    metrics_addr: SocketAddr,
    mesh: Arc<Mesh>,
    loads: Arc<Loads>,
    shutdown: Shutdown,
    tasks: Vec<JoinHandle<()>>,
}

/// A kube-rs client from the kubeconfig file, or the inferred configuration.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, MeshError> {
    let config = match kubeconfig {
        Some(path) => {
            let error = |source| MeshError::Kubeconfig {
                path: path.to_owned(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(error)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(error)?
        }
        None => kube::Config::infer().await.map_err(MeshError::Infer)?,
    };
    Client::try_from(config).map_err(MeshError::Client)
}

impl StandaloneMesh {
    /// Binds the listener, connects, fills the watch caches, then starts sending traffic and
    /// serving. When it returns, `/metrics` answers and traffic follows the cluster.
    pub async fn start(config: MeshConfig) -> Result<StandaloneMesh, MeshError> {
        let listener = TcpListener::bind(config.metrics_listen)
            .await
            .map_err(|source| MeshError::Bind {
                addr: config.metrics_listen,
                source,
            })?;
        let metrics_addr = listener.local_addr()?;
        let client = client(config.kubeconfig.as_deref()).await?;

        let shutdown = Shutdown::new();
        // Stops the watches already started if a later step fails.
        let guard = shutdown.clone().drop_guard();
        let view = KubeView::start(&client, &config.scope, &shutdown).await?;
        tokio::time::timeout(config.sync_timeout, view.wait_synced())
            .await
            .map_err(|_| MeshError::SyncTimeout(config.sync_timeout))??;
        guard.disarm();

        let mesh = Arc::new(Mesh::new(config.request_rate));
        let loads = Arc::new(Loads::default());
        let traffic = {
            let mesh = Arc::clone(&mesh);
            let shutdown = shutdown.clone();
            let tick = config.traffic_tick;
            tokio::spawn(async move { drive(view, &mesh, tick, &shutdown).await })
        };
        let app = metrics_router(Arc::clone(&mesh)).merge(controls(&mesh, &loads));
        let server = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if let Err(err) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
                {
                    tracing::error!(%err, "mesh metrics server failed");
                }
            })
        };
        let autoscaler = tokio::spawn(autoscale::run(
            client,
            Arc::clone(&loads),
            config.hpa_sync,
            shutdown.clone(),
        ));
        tracing::info!(metrics = %metrics_addr, scope = ?config.scope, "mesh serving");
        Ok(StandaloneMesh {
            metrics_addr,
            mesh,
            loads,
            shutdown,
            tasks: vec![traffic, server, autoscaler],
        })
    }

    /// Address of `/metrics` and `/sim/*`.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The mesh's controls and metrics.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The load figures HPAs follow.
    pub fn loads(&self) -> &Loads {
        &self.loads
    }

    /// Stops every task and waits for them.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for StandaloneMesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `GET /sim`, `POST /sim/error-rate`, `POST /sim/load` and `POST /sim/traffic`, answering as the simulator's own
/// admin endpoints do.
fn controls(mesh: &Arc<Mesh>, loads: &Arc<Loads>) -> Router {
    let ok = || (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response();
    let error_rate = {
        let mesh = Arc::clone(mesh);
        move |body: Bytes| async move {
            match parse_error_rate(&body) {
                Ok(e) => {
                    mesh.set_error_rate(&e.namespace, &e.deployment, e.rate);
                    tracing::info!(namespace = %e.namespace, deployment = %e.deployment, rate = ?e.rate, "error rate set");
                    ok()
                }
                Err(e) => e.into_response(),
            }
        }
    };
    let load = {
        let loads = Arc::clone(loads);
        move |body: Bytes| async move {
            match parse_load(&body) {
                Ok(l) => {
                    loads.set(&l.namespace, &l.hpa, l.load);
                    tracing::info!(namespace = %l.namespace, hpa = %l.hpa, load = l.load, "load set");
                    ok()
                }
                Err(e) => e.into_response(),
            }
        }
    };
    let traffic = {
        let mesh = Arc::clone(mesh);
        move |body: Bytes| async move {
            match mesh.traffic().apply(&body) {
                Ok(rules) => {
                    tracing::info!(rules = rules.len(), "traffic rules set");
                    (
                        StatusCode::OK,
                        axum::Json(serde_json::json!({"rules": rules})),
                    )
                        .into_response()
                }
                Err(e) => e.into_response(),
            }
        }
    };
    Router::new()
        .route(
            "/sim",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], HELP).into_response()
            }),
        )
        .route("/sim/error-rate", post(error_rate))
        .route("/sim/load", post(load))
        .route("/sim/traffic", post(traffic))
}
