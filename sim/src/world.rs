//! The shared state of a running simulator (`World`) and the configuration it starts with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::faults::Faults;
use crate::store::Store;
use crate::{auth, controllers, mesh, resources};

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
    /// The `iss` of the service-account tokens the simulator signs (kube-apiserver's
    /// `--service-account-issuer`).
    pub service_account_issuer: String,
    /// The API server's audiences: what a TokenRequest defaults to and a TokenReview without
    /// audiences checks (kube-apiserver's `--api-audiences`; empty means the issuer).
    pub api_audiences: Vec<String>,
}

/// The issuer `tests/cluster/up.sh` gives kube-apiserver, and the simulator's default.
pub const DEFAULT_SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc";

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
            service_account_issuer: DEFAULT_SERVICE_ACCOUNT_ISSUER.to_owned(),
            api_audiences: Vec::new(),
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
    /// Signs and reviews service-account tokens (TokenRequest, TokenReview).
    pub tokens: auth::tokens::TokenIssuer,
    /// The configuration it was started with.
    pub config: SimConfig,
}

impl AsRef<mesh::Mesh> for World {
    fn as_ref(&self) -> &mesh::Mesh {
        &self.mesh
    }
}
