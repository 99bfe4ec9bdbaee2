//! steerer-server: the gRPC server that owns canary rollouts of Kubernetes Deployments,
//! moving Istio VirtualService weights step by step, gated on Prometheus success rates.
//!
//! This file wires: `serve` builds the Kubernetes adapters (one function per seam: `routers`,
//! `metrics`), `serve_with` the engine, the gRPC services and the `/metrics` endpoint;
//! configuration lives in `config`, signal handling in `signals`, steerer's own metrics in
//! `telemetry`.
//!
//! `serve` runs the whole server on a listener the caller bound, so tests start it in-process
//! on `127.0.0.1:0`, stop it gracefully through the shutdown future, or abort its task to
//! simulate a crash.

pub mod api;
pub mod cache;
pub mod config;
pub mod domain;
pub mod engine;
mod error;
pub mod events;
mod follow;
pub mod leader;
pub mod metrics;
pub mod retry;
pub mod router;
mod signals;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod workloads;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::api::service::rollout_service_server::RolloutServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::{MAX_EVENT_LIMIT, MAX_SCALE_DOWN_DELAY, ServerConfig, TlsFiles};
use crate::engine::{Ports, Supervisor};
pub use crate::error::ServerError;

/// Runs the server against Kubernetes (`client`) and Prometheus until `shutdown` completes,
/// then drains: open watches end, drivers stop between steps. Its metrics go to
/// `config.telemetry`; a `client` built by [`telemetry::kube_client`] with the same telemetry
/// has its requests counted too.
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    // Before anything touches the cluster: a bad template or an unreadable webhook secret is a
    // start-up error saying which.
    let templates = Arc::new(config.templates()?);
    let secret = Arc::new(config.webhook_secret()?);
    let webhooks = Arc::new(
        webhooks::http::HttpWebhooks::new(config.allow_list()?, secret.clone())
            .map_err(|e| ServerError::Config(format!("webhook client: {e}")))?,
    );
    // Before serving (health never says SERVING without it): the records need the Rollout CRD.
    store::schema::check(&client).await?;
    let caches = CancellationToken::new();
    let _stop_caches = caches.clone().drop_guard();
    let changes = cache::Changes::default();
    let workloads = Arc::new(workloads::kube::KubeWorkloads::start(
        client.clone(),
        &config.namespaces,
        &caches,
        &changes,
    ));
    let router = routers(&config, &client, &caches, &changes);
    workloads
        .wait_ready(config.sync_timeout)
        .await
        .map_err(|e| ServerError::Sync(e.to_string()))?;
    let router = router
        .ready(config.sync_timeout)
        .await
        .map_err(|e| ServerError::Sync(e.to_string()))?;
    let route_kinds = router.served_kinds();
    let router = Arc::new(router);
    let metrics = metrics(&config)?;
    let store = store::crd::CrdStore::new(client.clone(), config.namespaces.clone())
        .with_event_limit(config.event_limit);
    let legacy = store::configmap::LegacyRecords::new(client.clone(), config.namespaces.clone());
    let carried = store::crd::migrate(&legacy, &store)
        .await
        .map_err(|e| ServerError::Restore(e.to_string()))?;
    if carried > 0 {
        tracing::info!(carried, "carried rollout records over from ConfigMaps");
    }
    let ports = Ports {
        workloads,
        router,
        metrics,
        store: Arc::new(store),
        webhooks,
        hub: events::Hub::with_limit(events::DEFAULT_MEMORY_EVENTS),
        telemetry: config.telemetry.clone(),
        changes: Some(changes),
    };
    serve_inner(
        config,
        listener,
        ports,
        templates,
        Some((client, secret)),
        &route_kinds,
        shutdown,
    )
    .await
}

/// The router seam: a router for every route kind of `router::factory::KINDS`, their watch
/// caches filling from now on (`Started::ready` waits for them).
fn routers(
    config: &ServerConfig,
    client: &kube::Client,
    caches: &CancellationToken,
    changes: &cache::Changes,
) -> router::factory::Started {
    router::factory::start(&router::RouterContext {
        client,
        namespaces: &config.namespaces,
        stop: caches,
        changes,
        istio_api_version: &config.istio_api_version,
    })
}

/// The metrics seam: the Prometheus query backend, asking each rollout's analysis of the
/// series its observer names (any of `metrics::observer::OBSERVERS`).
fn metrics(config: &ServerConfig) -> Result<Arc<dyn metrics::Metrics>, ServerError> {
    let observers = metrics::observer::OBSERVERS
        .iter()
        .map(|(_, build)| build())
        .collect();
    let prometheus = metrics::prometheus::PrometheusMetrics::new(
        &config.prometheus_url,
        config.metrics_timeout,
        observers,
        config.namespaces.clone(),
        // The checks of one shared tick come within its slack; one batch serves them.
        engine::decide::TICK_SLACK,
    )
    .map_err(|e| ServerError::Config(e.to_string()))?;
    Ok(Arc::new(
        prometheus.with_telemetry(config.telemetry.clone()),
    ))
}

/// Runs the server over the given adapters (the Kubernetes ones, or fakes in tests), leading
/// on its own (leader election needs the Kubernetes API: see [`serve`]), with
/// `ports.telemetry` as its metrics, served on `config.metrics_listen` when set.
pub async fn serve_with(
    config: ServerConfig,
    listener: TcpListener,
    ports: Ports,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let templates = Arc::new(config.templates()?);
    // The adapters are the caller's: they are taken to drive every kind.
    let kinds: Vec<&str> = router::factory::KINDS.iter().map(|(k, _)| *k).collect();
    serve_inner(config, listener, ports, templates, None, &kinds, shutdown).await
}

/// Starts the engine, leads (or follows the election), then serves gRPC until `shutdown`,
/// and stops everything it started.
async fn serve_inner(
    config: ServerConfig,
    listener: TcpListener,
    ports: Ports,
    templates: Arc<metrics::templates::MetricTemplates>,
    kubernetes: Option<(kube::Client, Arc<webhooks::http::WebhookSecret>)>,
    route_kinds: &[&str],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let (client, secret) = match kubernetes {
        Some((client, secret)) => (Some(client), Some(secret)),
        None => (None, None),
    };
    let telemetry = ports.telemetry.clone();
    let metrics_endpoint = match config.metrics_listen {
        Some(addr) => Some(telemetry::MetricsEndpoint::start(addr, telemetry.clone()).await?),
        None => None,
    };
    let auto = config
        .auto
        .then(|| (ports.workloads.clone(), config.namespaces.clone()));
    let supervisor = start_engine(&config, ports, templates.clone(), &telemetry)?;
    // If this future is dropped rather than shut down (its task aborted), drivers and the auto
    // loop still stop between steps, even while a connection task keeps the supervisor alive.
    let _stop_engine = supervisor.stopping().drop_guard();
    let (resumed, election) = lead(
        &config,
        &listener,
        client.clone(),
        &supervisor,
        auto,
        &telemetry,
    )
    .await?;
    let draining = CancellationToken::new();
    let grpc = Grpc::build(
        &config,
        client,
        &supervisor,
        election.as_ref(),
        &telemetry,
        &draining,
        route_kinds,
    )
    .await?;
    if config.reload_on_sighup {
        signals::reload_on_sighup(
            signals::Reloadable {
                auth: grpc.auth.clone(),
                templates,
                secret,
            },
            draining.clone(),
        );
    }
    let addr = listener.local_addr().ok();
    tracing::info!(
        ?addr,
        resumed,
        auto = config.auto,
        tls = config.tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        tokens = grpc.auth.enabled(),
        kubernetes_auth = config.kubernetes_auth.is_some(),
        metric_templates = supervisor.config().templates.names().len(),
        webhook_allow = %supervisor.config().webhook_allow.describe(),
        metrics = ?metrics_endpoint.as_ref().map(|m| m.addr()),
        "steerer server listening"
    );
    let result = grpc.serve(listener, shutdown, draining.clone()).await;
    draining.cancel();
    supervisor.shutdown().await;
    if let Some(election) = election {
        election.stop().await;
    }
    if let Some(endpoint) = metrics_endpoint {
        endpoint.stop().await;
    }
    tracing::info!("steerer server stopped");
    result
}

/// The engine: the supervisor of the rollout drivers, whose active rollouts the telemetry
/// reports.
fn start_engine(
    config: &ServerConfig,
    ports: Ports,
    templates: Arc<metrics::templates::MetricTemplates>,
    telemetry: &telemetry::Telemetry,
) -> Result<Arc<Supervisor>, ServerError> {
    // Without leader election the server drives every rollout; with it, only once elected.
    telemetry.set_leader(config.leader.is_none());
    let supervisor = Arc::new(Supervisor::new(ports, config.engine(templates)?));
    // Weak: the telemetry lives in the supervisor's ports, and must not keep it alive.
    let held = Arc::downgrade(&supervisor);
    telemetry.set_rollouts_source(Arc::new(move || {
        held.upgrade()
            .map(|s| {
                s.active()
                    .iter()
                    .map(telemetry::RolloutSummary::of)
                    .collect()
            })
            .unwrap_or_default()
    }));
    Ok(supervisor)
}

/// Leads on its own (resuming every unfinished rollout: their number is returned), or with
/// leader election follows every replica's records and leads once elected (the election is
/// returned).
async fn lead(
    config: &ServerConfig,
    listener: &TcpListener,
    client: Option<kube::Client>,
    supervisor: &Arc<Supervisor>,
    auto: Option<(Arc<dyn workloads::Workloads>, Vec<String>)>,
    telemetry: &telemetry::Telemetry,
) -> Result<(usize, Option<leader::Election>), ServerError> {
    match (&config.leader, client) {
        (Some(leader), Some(client)) => {
            // Follow every replica's records before serving, and lead only once elected.
            supervisor.step_down().await;
            let (synced, following) = tokio::sync::oneshot::channel();
            tokio::spawn(follow::run(
                client.clone(),
                config.namespaces.clone(),
                supervisor.clone(),
                synced,
                supervisor.stopping(),
            ));
            match tokio::time::timeout(config.sync_timeout, following).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(ServerError::Sync(
                        "rollout records (rollouts.steerer.dev) could not be listed and watched"
                            .into(),
                    ));
                }
            }
            let address = match &leader.advertise_address {
                Some(address) => address.clone(),
                None => listener
                    .local_addr()
                    .map_err(|e| ServerError::Config(format!("listener address: {e}")))?
                    .to_string(),
            };
            let election = leader::Election::start(client, leader.clone(), address)
                .await
                .map_err(|e| ServerError::Config(e.to_string()))?;
            tokio::spawn(follow_leadership(
                election.subscribe(),
                supervisor.clone(),
                auto,
                telemetry.clone(),
            ));
            Ok((0, Some(election)))
        }
        (Some(_), None) => Err(ServerError::Config(
            "leader election needs the Kubernetes API".into(),
        )),
        (None, _) => {
            let resumed = supervisor
                .lead(auto)
                .await
                .map_err(|e| ServerError::Restore(e.to_string()))?;
            Ok((resumed, None))
        }
    }
}

/// The gRPC side: the rollout service behind the one authorization layer, health and
/// reflection, on a transport with the configured TLS.
struct Grpc {
    router: tonic::transport::server::Router,
    health: tonic_health::server::HealthReporter,
    /// The token files, which SIGHUP re-reads.
    auth: Arc<api::auth::Auth>,
}

impl Grpc {
    async fn build(
        config: &ServerConfig,
        client: Option<kube::Client>,
        supervisor: &Arc<Supervisor>,
        election: Option<&leader::Election>,
        telemetry: &telemetry::Telemetry,
        draining: &CancellationToken,
        route_kinds: &[&str],
    ) -> Result<Self, ServerError> {
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
        let authentication = match (&config.kubernetes_auth, client) {
            (Some(kube_auth), Some(client)) => api::auth::Authentication::Kubernetes(Arc::new(
                api::kubeauth::KubeAuth::new(client, kube_auth.clone()),
            )),
            (Some(_), None) => {
                return Err(ServerError::Config(
                    "--auth kubernetes needs the Kubernetes API".into(),
                ));
            }
            (None, _) => api::auth::Authentication::Tokens(auth.clone()),
        };
        let facts = api::info::Facts {
            route_kinds: route_kinds.iter().map(|k| (*k).to_owned()).collect(),
            observers: metrics::observer::OBSERVERS
                .iter()
                .map(|(name, _)| (*name).to_owned())
                .collect(),
            auth: match &authentication {
                api::auth::Authentication::Kubernetes(_) => "kubernetes",
                api::auth::Authentication::Tokens(_) if auth.enabled() => "tokens",
                api::auth::Authentication::Tokens(_) => "none",
            }
            .to_owned(),
        };
        let limits = Arc::new(api::limits::Limits::new(config.limits));
        let audit = Arc::new(
            api::audit::Audit::open(config.audit_log.as_deref()).map_err(|e| {
                ServerError::Config(format!(
                    "audit log {}: {e}",
                    config
                        .audit_log
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ))
            })?,
        );
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &config.tls {
            // With Kubernetes authentication a client certificate is one way in, a token
            // another.
            builder = builder.tls_config(tls.server_config(config.kubernetes_auth.is_some())?)?;
        }
        let mut service = api::Api::new(
            supervisor.clone(),
            config.namespaces.clone(),
            draining.clone(),
        )
        .with_telemetry(telemetry.clone())
        .with_limits(limits.clone())
        .with_audit(audit)
        .with_facts(facts);
        if let Some(election) = election {
            service = service.with_forwarding(api::forward::Forwarder::new(election.subscribe()));
        }
        // Every RolloutService call is authorized here, before a handler runs; health and
        // reflection stay open. Outside that, every call is counted, refused ones included.
        let service = tower::Layer::layer(
            &api::auth::AuthLayer::new(authentication, limits),
            RolloutServiceServer::new(service).max_decoding_message_size(config.max_request_bytes),
        );
        let service = tower::Layer::layer(
            &telemetry::GrpcMetricsLayer::new(telemetry.clone()),
            service,
        );
        let router = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service);
        Ok(Self {
            router,
            health,
            auth,
        })
    }

    /// Serves on `listener` until `shutdown` completes: then health says NOT_SERVING, open
    /// watches drain (`draining`), and the transport stops.
    async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        draining: CancellationToken,
    ) -> Result<(), ServerError> {
        let health = self.health;
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: draining watches and drivers");
            health
                .set_not_serving::<RolloutServiceServer<api::Api>>()
                .await;
            draining.cancel();
        };
        self.router
            .serve_with_incoming_shutdown(
                // Every write goes out at once: a watch event held back for the ACK of the one
                // before (Nagle's algorithm) would wait for the client's delayed ACK.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                signal,
            )
            .await
            .map_err(ServerError::from)
    }
}

/// Leads while the election says so: resumes the unfinished rollouts on winning, stops
/// driving them on losing.
async fn follow_leadership(
    mut leadership: tokio::sync::watch::Receiver<leader::Leadership>,
    supervisor: Arc<Supervisor>,
    auto: Option<(Arc<dyn workloads::Workloads>, Vec<String>)>,
    telemetry: telemetry::Telemetry,
) {
    let stopping = supervisor.stopping();
    loop {
        let leading = leadership.borrow_and_update().leading;
        telemetry.set_leader(leading);
        if leading && !supervisor.leading() {
            match supervisor.lead(auto.clone()).await {
                Ok(resumed) => tracing::info!(resumed, "this replica leads: executing rollouts"),
                Err(error) => {
                    tracing::error!(%error, "could not take over the rollouts; trying again");
                    supervisor.step_down().await;
                    tokio::select! {
                        _ = stopping.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
        } else if !leading && supervisor.leading() {
            supervisor.step_down().await;
            tracing::info!("this replica no longer leads: it stopped executing rollouts");
        }
        tokio::select! {
            _ = stopping.cancelled() => return,
            changed = leadership.changed() => {
                if changed.is_err() {
                    supervisor.step_down().await;
                    return;
                }
            }
        }
    }
}
