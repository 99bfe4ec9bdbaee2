//! The `steerer-server` binary: reads flags (or their environment variables), connects to
//! Kubernetes the way kube-rs does by default (KUBECONFIG, ~/.kube/config or in-cluster), serves
//! until SIGTERM or SIGINT, then drains within a grace period.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use steerer_server::api::kubeauth::KubeAuthConfig;
use steerer_server::api::limits::LimitsConfig;
use steerer_server::domain::{AnalysisSettings, Strategy};
use steerer_server::leader::LeaderConfig;
use steerer_server::{ServerConfig, TlsFiles};

/// jemalloc rather than the system allocator: the server allocates and frees many small,
/// short-lived buffers (JSON, HTTP, views), which glibc's malloc spends a fifth of the
/// server's CPU on under load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `--version`: the release and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("STEERER_COMMIT"),
    ")"
);

/// Progressive delivery for Kubernetes Deployments over Istio and Prometheus.
#[derive(Debug, Parser)]
#[command(name = "steerer-server", version = VERSION, about)]
struct Flags {
    /// Address of the gRPC server. Use 0.0.0.0:50051 to accept connections from other hosts
    /// (for example behind a Kubernetes Service).
    #[arg(long, env = "STEERER_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Prometheus base URL.
    #[arg(
        long,
        env = "STEERER_PROMETHEUS_URL",
        default_value = "http://127.0.0.1:9090"
    )]
    prometheus_url: String,
    /// Namespace to serve; repeat for several. None = all namespaces.
    #[arg(long = "namespace", env = "STEERER_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Default canary weight step, in percent.
    #[arg(long, env = "STEERER_STEP_WEIGHT", default_value_t = 10)]
    step_weight: u32,
    /// Default weight at which the canary is promoted.
    #[arg(long, env = "STEERER_MAX_WEIGHT", default_value_t = 100)]
    max_weight: u32,
    /// Default time between checks and steps.
    #[arg(long, env = "STEERER_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Default minimum success rate, in percent.
    #[arg(long, env = "STEERER_SUCCESS_RATE_THRESHOLD", default_value_t = 99.0)]
    success_rate_threshold: f64,
    /// Default number of failed checks that rolls back.
    #[arg(long, env = "STEERER_MAX_FAILED_CHECKS", default_value_t = 5)]
    max_failed_checks: u32,
    /// Default longest time a rollout may stay halted before it is rolled back.
    #[arg(long, env = "STEERER_PROGRESS_DEADLINE", default_value = "10m", value_parser = humantime::parse_duration)]
    progress_deadline: Duration,
    /// Default canary requests per second below which a check has no data.
    #[arg(long, env = "STEERER_MIN_REQUEST_RATE", default_value_t = 1.0)]
    min_request_rate: f64,
    /// Default ceiling for the canary's p99 request duration in milliseconds, for rollouts
    /// that do not set one. Unset: latency is checked only when a rollout asks.
    #[arg(long, env = "STEERER_MAX_LATENCY_P99_MS")]
    max_latency_p99_ms: Option<f64>,
    /// YAML or JSON file of metric templates (template name -> PromQL with {{ namespace }},
    /// {{ target }}, {{ canary }} and {{ interval }}); StartRollout's analysis.metrics name
    /// them. Read at start-up (a bad template is an error naming it) and on SIGHUP.
    #[arg(long, env = "STEERER_METRIC_TEMPLATES")]
    metric_templates: Option<PathBuf>,
    /// Host webhooks may be sent to: host, host:port or *.suffix; repeat for several. None
    /// allowed by default.
    #[arg(
        long = "webhook-allow",
        env = "STEERER_WEBHOOK_ALLOW",
        value_delimiter = ','
    )]
    webhook_allow: Vec<String>,
    /// File of the key webhook bodies are signed with: the X-Steerer-Signature header carries
    /// sha256= and the hex HMAC-SHA256 of the body. Read at start-up and on SIGHUP.
    #[arg(long, env = "STEERER_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// Shortest Prometheus rate() window; a check uses max(interval, this), never reaching
    /// back before the revision under analysis got traffic, and none runs before it has had
    /// traffic this long.
    #[arg(long, env = "STEERER_METRICS_WINDOW", default_value = "1m", value_parser = humantime::parse_duration)]
    metrics_window: Duration,
    /// Checks of all rollouts fall on shared ticks every min(interval, this), counted from
    /// the Unix epoch, so one grouped Prometheus query serves every rollout checking on a
    /// tick; a check waits for the next tick after its interval (0s: no ticks).
    #[arg(long, env = "STEERER_CHECK_TICK", default_value = "5s", value_parser = humantime::parse_duration)]
    check_tick: Duration,
    /// Events kept per rollout (1 to 1400); older ones are dropped, and watching from a
    /// dropped sequence answers OUT_OF_RANGE naming the oldest kept.
    #[arg(long, env = "STEERER_EVENT_LIMIT", default_value_t = steerer_server::events::DEFAULT_EVENT_LIMIT)]
    event_limit: usize,
    /// Newest finished rollouts kept per target (namespace and GA Deployment); older
    /// records are deleted.
    #[arg(long, env = "STEERER_RETAIN_PER_TARGET", default_value_t = steerer_server::store::prune::DEFAULT_RETAIN_PER_TARGET)]
    retain_per_target: usize,
    /// Finished rollouts older than this are deleted, whatever their rank.
    #[arg(long, env = "STEERER_RETAIN_FOR", default_value = "30days", value_parser = humantime::parse_duration)]
    retain_for: Duration,
    /// Timeout of one Prometheus query.
    #[arg(long, env = "STEERER_METRICS_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    metrics_timeout: Duration,
    /// Auto mode: GA Deployments labelled steerer.dev/rollout=enabled get a rollout when their
    /// canary's pod template changes.
    #[arg(long, env = "STEERER_AUTO")]
    auto: bool,
    /// How often auto mode looks for new canary revisions.
    #[arg(long, env = "STEERER_AUTO_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    auto_interval: Duration,
    /// Time between moving all traffic off the canary (promotion, rollback, abort) and scaling
    /// it to zero, so mesh proxies get the new route before the canary's pods go (at most 1h).
    #[arg(long, env = "STEERER_SCALE_DOWN_DELAY", default_value = "30s", value_parser = humantime::parse_duration)]
    scale_down_delay: Duration,
    /// Served version of networking.istio.io VirtualServices.
    #[arg(long, env = "STEERER_ISTIO_API_VERSION", default_value = "v1")]
    istio_api_version: String,
    /// Which series give a workload's requests, failures and latency (istio or linkerd), for
    /// the rollouts whose start names no observer.
    #[arg(long, env = "STEERER_OBSERVER", default_value = "istio")]
    observer: String,
    /// Time allowed to drain after SIGTERM before exiting anyway.
    #[arg(long, env = "STEERER_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// File of accepted bearer tokens, one a line (`#` starts a comment). When set, every
    /// RolloutService call needs `authorization: Bearer TOKEN`; health and reflection stay
    /// open. Re-read when it changes and on SIGHUP.
    #[arg(long, env = "STEERER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// File of read-only tokens: they may get, list and watch rollouts, not change them.
    #[arg(long, env = "STEERER_READ_ONLY_TOKEN_FILE")]
    read_only_token_file: Option<PathBuf>,
    /// PEM certificate chain of the server; with --tls-key, serves TLS.
    #[arg(long, env = "STEERER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the server certificate.
    #[arg(long, env = "STEERER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle of client certificates: every client must present a certificate it
    /// signed (mutual TLS). Needs --tls-cert and --tls-key.
    #[arg(long, env = "STEERER_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Run as one of several replicas: the holder of a coordination.k8s.io Lease executes
    /// rollouts; every replica serves reads, and forwards starts and commands to the leader.
    #[arg(long, env = "STEERER_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease.
    #[arg(
        long,
        env = "STEERER_LEASE_NAMESPACE",
        default_value = "steerer-system"
    )]
    lease_namespace: String,
    /// Name of the Lease.
    #[arg(long, env = "STEERER_LEASE_NAME", default_value = "steerer")]
    lease_name: String,
    /// This replica's identity in the election (default: $POD_NAME, else the host name).
    #[arg(long, env = "STEERER_IDENTITY")]
    identity: Option<String>,
    /// Address (host:port) at which the other replicas reach this one (default: the listen
    /// address).
    #[arg(long, env = "STEERER_ADVERTISE_ADDRESS")]
    advertise_address: Option<String>,
    /// How long the Lease lasts without renewal (whole seconds); a leader that cannot renew
    /// stops writing before then, and another replica takes over after it.
    #[arg(long, env = "STEERER_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// How long before the Lease expires the leader renews it (whole seconds).
    #[arg(long, env = "STEERER_LEASE_RENEW_BEFORE", default_value = "5s", value_parser = humantime::parse_duration)]
    lease_renew_before: Duration,
    /// Serve steerer's own metrics (`GET /metrics`, OpenMetrics text) on this address, for
    /// example 0.0.0.0:9102. Not served when unset.
    #[arg(long, env = "STEERER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// How callers are authenticated: `tokens` (the token files; open without them) or
    /// `kubernetes` (tokens the cluster accepts, checked with a TokenReview, and client
    /// certificates under --client-ca; every call authorized with a SubjectAccessReview on
    /// steerer.dev/rollouts).
    #[arg(long, env = "STEERER_AUTH", value_enum, default_value = "tokens")]
    auth: AuthMode,
    /// Audience a caller's token must be meant for (repeatable; default: the API server's).
    #[arg(
        long = "auth-audience",
        env = "STEERER_AUTH_AUDIENCES",
        value_delimiter = ','
    )]
    auth_audiences: Vec<String>,
    /// How long a TokenReview or SubjectAccessReview answer is reused.
    #[arg(long, env = "STEERER_AUTH_CACHE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    auth_cache_ttl: Duration,
    /// Append one JSON line per mutating call (caller, RPC, namespace, target, rollout,
    /// outcome) to this file; the lines are logged in any case.
    #[arg(long, env = "STEERER_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Largest request message accepted, in bytes.
    #[arg(long, env = "STEERER_MAX_REQUEST_BYTES", default_value_t = steerer_server::config::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Open WatchRollout streams in all.
    #[arg(long, env = "STEERER_MAX_WATCHES", default_value_t = 10_000)]
    max_watches: usize,
    /// Open WatchRollout streams per caller.
    #[arg(long, env = "STEERER_MAX_WATCHES_PER_CALLER", default_value_t = 100)]
    max_watches_per_caller: usize,
    /// Mutating calls (start, abort, pause, resume, promote) per caller per minute; 0 = no
    /// limit.
    #[arg(long, env = "STEERER_MUTATIONS_PER_MINUTE", default_value_t = 60)]
    mutations_per_minute: u32,
    /// How long a watch stream may go unread before it ends, naming the sequence to resume
    /// from.
    #[arg(long, env = "STEERER_WATCH_SEND_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    watch_send_timeout: Duration,
    /// Log as JSON lines, each carrying its spans (the rollout and the step it was written
    /// in).
    #[arg(long, env = "STEERER_LOG_JSON")]
    log_json: bool,
}

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AuthMode {
    Tokens,
    Kubernetes,
}

/// The pod name, else the host name.
fn default_identity() -> anyhow::Result<String> {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return Ok(pod);
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("no --identity, no POD_NAME and no host name")?;
    Ok(host.trim().to_owned())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with its causes (`a: b: c`) and no backtrace, whatever RUST_BACKTRACE
            // says: it is read by operators (a missing CRD says what to install), and the
            // logs on stdout carry the rest.
            eprintln!("steerer-server: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let flags = Flags::parse();
    steerer_server::telemetry::logs::init(flags.log_json).context("installing logging")?;

    let config = ServerConfig {
        listen: flags.listen,
        prometheus_url: flags.prometheus_url,
        namespaces: flags.namespaces,
        defaults: AnalysisSettings {
            strategy: Strategy::Canary {
                step_weight: flags.step_weight,
                max_weight: flags.max_weight,
            },
            interval: flags.interval,
            success_rate_threshold: flags.success_rate_threshold,
            max_failed_checks: flags.max_failed_checks,
            progress_deadline: flags.progress_deadline,
            min_request_rate: flags.min_request_rate,
            max_latency_p99_ms: flags.max_latency_p99_ms,
            ..AnalysisSettings::default()
        },
        metrics_window: flags.metrics_window,
        check_tick: flags.check_tick,
        event_limit: flags.event_limit,
        retain_per_target: flags.retain_per_target,
        retain_for: flags.retain_for,
        metrics_timeout: flags.metrics_timeout,
        auto: flags.auto,
        auto_interval: flags.auto_interval,
        scale_down_delay: flags.scale_down_delay,
        istio_api_version: flags.istio_api_version,
        observer: flags.observer,
        token_file: flags.token_file,
        read_only_token_file: flags.read_only_token_file,
        tls: match (flags.tls_cert, flags.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: flags.client_ca,
            }),
            _ => None,
        },
        reload_on_sighup: true,
        kubernetes_auth: match flags.auth {
            AuthMode::Kubernetes => Some(KubeAuthConfig {
                audiences: flags.auth_audiences,
                cache_ttl: flags.auth_cache_ttl,
            }),
            AuthMode::Tokens => None,
        },
        limits: LimitsConfig {
            mutations_per_minute: flags.mutations_per_minute,
            watches_per_caller: flags.max_watches_per_caller,
            watches: flags.max_watches,
            slow_reader: flags.watch_send_timeout,
        },
        audit_log: flags.audit_log,
        max_request_bytes: flags.max_request_bytes,
        leader: if flags.leader_elect {
            Some(LeaderConfig {
                namespace: flags.lease_namespace,
                lease_name: flags.lease_name,
                identity: match flags.identity {
                    Some(identity) => identity,
                    None => default_identity()?,
                },
                advertise_address: flags.advertise_address.or_else(|| {
                    (!flags.listen.ip().is_unspecified()).then(|| flags.listen.to_string())
                }),
                lease_duration: flags.lease_duration,
                renew_before: flags.lease_renew_before,
            })
        } else {
            None
        },
        metrics_listen: flags.metrics_listen,
        metric_templates: flags.metric_templates,
        webhook_allow: flags.webhook_allow,
        webhook_secret_file: flags.webhook_secret_file,
        ..ServerConfig::default()
    };
    if let Some(leader) = &config.leader
        && leader.advertise_address.is_none()
    {
        anyhow::bail!(
            "--leader-elect with --listen on {} needs --advertise-address: the address the other replicas reach this one at",
            config.listen
        );
    }
    config.validate()?;

    // As `kube::Client::try_default` does, with every request counted in the server's metrics.
    let kube_config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let client = steerer_server::telemetry::kube_client(kube_config, &config.telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("failed to listen on {}", config.listen))?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(steerer_server::serve(
        config,
        listener,
        client,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let mut server = server;
    tokio::select! {
        result = &mut server => return result.context("server task failed")?.map_err(Into::into),
        signal = terminated() => signal?,
    }
    tracing::info!(grace = ?flags.shutdown_grace, "signal received; shutting down");
    let _ = stop_tx.send(());
    match tokio::time::timeout(flags.shutdown_grace, &mut server).await {
        Ok(result) => result.context("server task failed")?.map_err(Into::into),
        Err(_) => {
            server.abort();
            anyhow::bail!("shutdown did not finish within {:?}", flags.shutdown_grace)
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => {}
            result = tokio::signal::ctrl_c() => result.context("installing SIGINT handler")?,
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("installing SIGINT handler")
    }
}
