//! steerer-server: the gRPC server that owns canary rollouts of Kubernetes Deployments,
//! moving Istio VirtualService weights step by step, gated on Prometheus success rates.
//!
//! `serve` runs the whole server on a listener the caller bound, so tests start it in-process
//! on `127.0.0.1:0`, stop it gracefully through the shutdown future, or abort its task to
//! simulate a crash.

pub mod api;
pub mod cache;
pub mod domain;
pub mod engine;
pub mod events;
pub mod metrics;
pub mod retry;
pub mod router;
pub mod store;
pub mod workloads;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use steerer::v1::rollout_service_server::RolloutServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::AnalysisSettings;
use crate::engine::{EngineConfig, Ports, Supervisor};

/// Most events a rollout may keep: at up to 700 bytes each, they fill most of a 1 MiB
/// ConfigMap.
pub const MAX_EVENT_LIMIT: usize = 1400;

/// Longest scale-down delay: a rollout's end waits for it.
pub const MAX_SCALE_DOWN_DELAY: Duration = Duration::from_secs(3600);

/// Everything the server needs besides a listener and a Kubernetes client.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (used by the binary; `serve` takes a bound listener).
    pub listen: SocketAddr,
    /// Prometheus base URL, for example `http://127.0.0.1:9090`.
    pub prometheus_url: String,
    /// Namespaces served (empty = all).
    pub namespaces: Vec<String>,
    /// Analysis settings for fields a request leaves out.
    pub defaults: AnalysisSettings,
    /// Shortest metrics window; the window of a check is max(interval, this), cut at the time
    /// the revision under analysis got its first traffic, and no check runs before the
    /// revision has had traffic this long.
    pub metrics_window: Duration,
    /// Events kept per rollout, newest first; older ones are dropped from the store and the
    /// events hub (a rollout's record lives in one ConfigMap of at most 1 MiB, and an event
    /// takes 300 to 700 bytes of it).
    pub event_limit: usize,
    /// Timeout of one Prometheus query.
    pub metrics_timeout: Duration,
    /// Start rollouts by themselves for labelled GA Deployments whose canary changes.
    pub auto: bool,
    /// How often auto mode looks for new canary revisions.
    pub auto_interval: Duration,
    /// Time between moving all traffic off the canary (promotion, rollback, abort) and
    /// scaling it to zero: mesh proxies take a while to get a new route.
    pub scale_down_delay: Duration,
    /// Served version of `networking.istio.io` VirtualServices.
    pub istio_api_version: String,
    /// How long start-up waits for the watch caches.
    pub sync_timeout: Duration,
    /// Accepted bearer tokens, one a line. Set (or `read_only_token_file` set): every
    /// `RolloutService` call needs a valid token; health and reflection stay open.
    pub token_file: Option<PathBuf>,
    /// Tokens that may only get, list and watch rollouts.
    pub read_only_token_file: Option<PathBuf>,
    /// Serve TLS (and require client certificates when `client_ca` is set).
    pub tls: Option<TlsFiles>,
    /// Re-read the token files on SIGHUP (the binary; tests leave the signal alone).
    pub reload_on_sighup: bool,
}

/// PEM files of the server's TLS identity and, for mutual TLS, the CA of client certificates.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to this CA; `None` = no client certificate asked for.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn server_config(&self) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
        let read = |what: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| ServerError::Config(format!("{what} {}: {e}", path.display())))
        };
        let identity = tonic::transport::Identity::from_pem(
            read("TLS certificate", &self.cert)?,
            read("TLS key", &self.key)?,
        );
        let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(
                "client CA",
                ca,
            )?));
        }
        Ok(tls)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            prometheus_url: "http://127.0.0.1:9090".into(),
            namespaces: Vec::new(),
            defaults: AnalysisSettings::default(),
            metrics_window: Duration::from_secs(60),
            event_limit: events::DEFAULT_EVENT_LIMIT,
            metrics_timeout: Duration::from_secs(5),
            auto: false,
            auto_interval: Duration::from_secs(2),
            scale_down_delay: engine::DEFAULT_SCALE_DOWN_DELAY,
            istio_api_version: "v1".into(),
            sync_timeout: Duration::from_secs(30),
            token_file: None,
            read_only_token_file: None,
            tls: None,
            reload_on_sighup: false,
        }
    }
}

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("watch caches did not sync: {0}")]
    Sync(String),
    #[error("failed to load stored rollouts: {0}")]
    Restore(String),
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(String),
}

impl ServerConfig {
    /// Checks names and defaults.
    pub fn validate(&self) -> Result<(), ServerError> {
        for ns in &self.namespaces {
            api::validate::dns1123_label("namespace", ns).map_err(|e| ServerError::Config(e.0))?;
        }
        api::validate::check_analysis(&self.defaults).map_err(|e| ServerError::Config(e.0))?;
        if let Some(tls) = &self.tls
            && (tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty())
        {
            return Err(ServerError::Config(
                "TLS needs both a certificate and a key".into(),
            ));
        }
        if !(1..=MAX_EVENT_LIMIT).contains(&self.event_limit) {
            return Err(ServerError::Config(format!(
                "events per rollout must be between 1 and {MAX_EVENT_LIMIT} (a rollout's events share one ConfigMap of at most 1 MiB), got {}",
                self.event_limit
            )));
        }
        if self.scale_down_delay > MAX_SCALE_DOWN_DELAY {
            return Err(ServerError::Config(format!(
                "scale-down delay must be at most {}, got {}",
                humantime::format_duration(MAX_SCALE_DOWN_DELAY),
                humantime::format_duration(self.scale_down_delay)
            )));
        }
        if self.prometheus_url.is_empty() {
            return Err(ServerError::Config("prometheus url is required".into()));
        }
        Ok(())
    }

    fn engine(&self) -> EngineConfig {
        EngineConfig {
            defaults: self.defaults.clone(),
            metrics_window: self.metrics_window,
            auto: self.auto,
            auto_interval: self.auto_interval,
            scale_down_delay: self.scale_down_delay,
        }
    }
}

/// Runs the server against Kubernetes (`client`) and Prometheus until `shutdown` completes,
/// then drains: open watches end, drivers stop between steps.
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let caches = CancellationToken::new();
    let _stop_caches = caches.clone().drop_guard();
    let workloads = Arc::new(workloads::kube::KubeWorkloads::start(
        client.clone(),
        &config.namespaces,
        &caches,
    ));
    let router = Arc::new(router::istio::IstioRouter::start(
        client.clone(),
        &config.istio_api_version,
        &config.namespaces,
        &caches,
    ));
    workloads
        .wait_ready(config.sync_timeout)
        .await
        .map_err(|e| ServerError::Sync(e.to_string()))?;
    router
        .wait_ready(config.sync_timeout)
        .await
        .map_err(|e| ServerError::Sync(format!("VirtualServices: {e}")))?;
    let metrics = Arc::new(
        metrics::prometheus::PrometheusMetrics::new(
            &config.prometheus_url,
            config.metrics_timeout,
            config.namespaces.clone(),
            Duration::from_millis(500),
        )
        .map_err(|e| ServerError::Config(e.to_string()))?,
    );
    let store = Arc::new(
        store::configmap::ConfigMapStore::new(client, config.namespaces.clone())
            .with_event_limit(config.event_limit),
    );
    let ports = Ports {
        workloads,
        router,
        metrics,
        store,
        hub: events::Hub::with_limit(config.event_limit),
    };
    serve_with(config, listener, ports, shutdown).await
}

/// Runs the server over the given adapters (the Kubernetes ones, or fakes in tests).
pub async fn serve_with(
    config: ServerConfig,
    listener: TcpListener,
    ports: Ports,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let supervisor = Arc::new(Supervisor::new(ports.clone(), config.engine()));
    // If this future is dropped rather than shut down (its task aborted), drivers and the auto
    // loop still stop between steps, even while a connection task keeps the supervisor alive.
    let _stop_engine = supervisor.stopping().drop_guard();
    let resumed = supervisor
        .restore()
        .await
        .map_err(|e| ServerError::Restore(e.to_string()))?;
    if config.auto {
        tokio::spawn(engine::auto::run(
            supervisor.clone(),
            ports.workloads.clone(),
            config.namespaces.clone(),
        ));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RolloutServiceServer<api::Api>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(steerer::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(steerer::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;

    let auth = Arc::new(
        api::auth::Auth::from_files(
            config.token_file.as_deref(),
            config.read_only_token_file.as_deref(),
        )
        .map_err(|e| ServerError::Config(e.to_string()))?,
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls.server_config()?)?;
    }
    let draining = CancellationToken::new();
    if config.reload_on_sighup {
        reload_on_sighup(auth.clone(), draining.clone());
    }
    let service = api::Api::new(
        supervisor.clone(),
        config.namespaces.clone(),
        draining.clone(),
        auth.clone(),
    );
    let addr = listener.local_addr().ok();
    tracing::info!(
        ?addr,
        resumed,
        auto = config.auto,
        tls = config.tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        tokens = auth.enabled(),
        "steerer server listening"
    );
    let signal = {
        let draining = draining.clone();
        let health = health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining watches and drivers");
            health
                .set_not_serving::<RolloutServiceServer<api::Api>>()
                .await;
            draining.cancel();
        }
    };
    let result = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(RolloutServiceServer::new(service))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            signal,
        )
        .await;
    draining.cancel();
    supervisor.shutdown().await;
    tracing::info!("steerer server stopped");
    result.map_err(ServerError::from)
}

/// Re-reads the token files on every SIGHUP until the server drains.
fn reload_on_sighup(auth: Arc<api::auth::Auth>, draining: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => hup,
            Err(error) => {
                tracing::warn!(%error, "no SIGHUP handler; token files are still re-read when they change");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = draining.cancelled() => break,
                    received = hup.recv() => {
                        if received.is_none() {
                            break;
                        }
                        tracing::info!("SIGHUP: re-reading token files");
                        auth.reload();
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (auth, draining);
    }
}
