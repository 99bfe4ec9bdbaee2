//! The server's configuration: every setting `serve` takes, its defaults and its checks, and
//! the TLS files it reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::AnalysisSettings;
use crate::engine::EngineConfig;
use crate::error::ServerError;
use crate::metrics::observer::{self, Observer};
use crate::metrics::templates::MetricTemplates;
use crate::telemetry::Telemetry;
use crate::webhooks::AllowList;
use crate::webhooks::http::WebhookSecret;
use crate::{api, engine, events};

/// Most events a rollout may keep: at up to 700 bytes each, they fill most of a 1 MiB
/// ConfigMap.
pub const MAX_EVENT_LIMIT: usize = 1400;

/// Longest scale-down delay: a rollout's end waits for it.
pub const MAX_SCALE_DOWN_DELAY: Duration = Duration::from_secs(3600);

/// Period of the shared check ticks, for intervals longer than it.
pub const DEFAULT_CHECK_TICK: Duration = Duration::from_secs(5);
/// Longest check tick: a check may wait that long for its tick.
pub const MAX_CHECK_TICK: Duration = Duration::from_secs(600);

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
    /// Checks of all rollouts fall on shared ticks every `min(interval, check_tick)` from
    /// the Unix epoch, so one grouped Prometheus query serves every rollout checking on a
    /// tick; zero: each rollout checks on its own schedule.
    pub check_tick: Duration,
    /// Events kept per rollout in its record, newest first; older ones are dropped (a
    /// rollout's record is one custom resource, and an event takes 300 to 700 bytes of it).
    pub event_limit: usize,
    /// Newest finished rollouts kept per target; older records are deleted.
    pub retain_per_target: usize,
    /// Finished rollouts older than this are deleted.
    pub retain_for: Duration,
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
    /// Which series give a workload's requests, failures and latency: the name of an
    /// observer of `metrics::observer::OBSERVERS` (`istio`).
    pub observer: String,
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
    /// Authenticate with the cluster (TokenReview, client certificates) and authorize every
    /// call with a SubjectAccessReview (`None` = token files, or no authentication).
    pub kubernetes_auth: Option<crate::api::kubeauth::KubeAuthConfig>,
    /// Limits per caller and in total.
    pub limits: crate::api::limits::LimitsConfig,
    /// Append an audit line per mutating call to this file (JSON lines).
    pub audit_log: Option<PathBuf>,
    /// Largest request message accepted.
    pub max_request_bytes: usize,
    /// Leader election among replicas (`None` = this server leads on its own).
    pub leader: Option<crate::leader::LeaderConfig>,
    /// Serve `GET /metrics` (steerer's own metrics) on this address; port 0 picks a free one,
    /// recorded in [`Telemetry::metrics_addr`](crate::telemetry::Telemetry::metrics_addr).
    pub metrics_listen: Option<SocketAddr>,
    /// The operator's metric templates file (YAML or JSON: name -> PromQL template), read at
    /// start-up and on SIGHUP; `None` = no templates.
    pub metric_templates: Option<PathBuf>,
    /// Hosts webhooks may be sent to (`host`, `host:port`, `*.suffix`); empty = none.
    pub webhook_allow: Vec<String>,
    /// File of the key webhook bodies are signed with (HMAC-SHA256), read at start-up and
    /// on SIGHUP; `None` = unsigned.
    pub webhook_secret_file: Option<PathBuf>,
    /// The metrics `serve` records into. Clones share it: build the Kubernetes client with
    /// [`telemetry::kube_client`](crate::telemetry::kube_client) and this same value so its
    /// requests are counted too. (`serve_with` uses the one in its `Ports`.)
    pub telemetry: Telemetry,
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
    /// The TLS settings; `optional_client_certificate` lets clients without a certificate in
    /// (they authenticate otherwise).
    pub(crate) fn server_config(
        &self,
        optional_client_certificate: bool,
    ) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
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
            tls = tls
                .client_ca_root(tonic::transport::Certificate::from_pem(read(
                    "client CA",
                    ca,
                )?))
                .client_auth_optional(optional_client_certificate);
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
            check_tick: DEFAULT_CHECK_TICK,
            event_limit: events::DEFAULT_EVENT_LIMIT,
            retain_per_target: crate::store::prune::DEFAULT_RETAIN_PER_TARGET,
            retain_for: crate::store::prune::DEFAULT_RETAIN_FOR,
            metrics_timeout: Duration::from_secs(5),
            auto: false,
            auto_interval: Duration::from_secs(2),
            scale_down_delay: engine::DEFAULT_SCALE_DOWN_DELAY,
            istio_api_version: "v1".into(),
            observer: crate::metrics::observer::istio::NAME.into(),
            sync_timeout: Duration::from_secs(30),
            token_file: None,
            read_only_token_file: None,
            tls: None,
            reload_on_sighup: false,
            leader: None,
            kubernetes_auth: None,
            limits: crate::api::limits::LimitsConfig::default(),
            audit_log: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            metrics_listen: None,
            metric_templates: None,
            webhook_allow: Vec::new(),
            webhook_secret_file: None,
            telemetry: Telemetry::default(),
        }
    }
}

/// Default of [`ServerConfig::max_request_bytes`]: far above any valid request.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;

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
                "events per rollout must be between 1 and {MAX_EVENT_LIMIT} (a rollout's events share one record of at most 1 MiB), got {}",
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
        if self.check_tick > MAX_CHECK_TICK {
            return Err(ServerError::Config(format!(
                "check tick must be at most {}, got {}",
                humantime::format_duration(MAX_CHECK_TICK),
                humantime::format_duration(self.check_tick)
            )));
        }
        if self.kubernetes_auth.is_some()
            && (self.token_file.is_some() || self.read_only_token_file.is_some())
        {
            return Err(ServerError::Config(
                "--auth kubernetes and token files exclude each other".into(),
            ));
        }
        if let Some(leader) = &self.leader {
            leader.validate().map_err(ServerError::Config)?;
        }
        if self.prometheus_url.is_empty() {
            return Err(ServerError::Config("prometheus url is required".into()));
        }
        self.allow_list()?;
        self.observer()?;
        Ok(())
    }

    /// The observer named by `observer`.
    pub(crate) fn observer(&self) -> Result<Arc<dyn Observer>, ServerError> {
        observer::by_name(&self.observer).ok_or_else(|| {
            ServerError::Config(format!(
                "unknown observer {:?}: known are {}",
                self.observer,
                observer::names().join(", ")
            ))
        })
    }

    /// The webhook allow-list, parsed.
    pub(crate) fn allow_list(&self) -> Result<AllowList, ServerError> {
        AllowList::parse(&self.webhook_allow).map_err(|e| ServerError::Config(e.0))
    }

    /// The metric templates, read and checked: a template with a problem is an error naming
    /// it.
    pub(crate) fn templates(&self) -> Result<MetricTemplates, ServerError> {
        match &self.metric_templates {
            Some(path) => {
                MetricTemplates::load(path).map_err(|e| ServerError::Config(e.to_string()))
            }
            None => Ok(MetricTemplates::default()),
        }
    }

    /// The webhook secret, read.
    pub(crate) fn webhook_secret(&self) -> Result<WebhookSecret, ServerError> {
        match &self.webhook_secret_file {
            Some(path) => WebhookSecret::load(path).map_err(|e| ServerError::Config(e.to_string())),
            None => Ok(WebhookSecret::none()),
        }
    }

    pub(crate) fn engine(
        &self,
        templates: Arc<MetricTemplates>,
    ) -> Result<EngineConfig, ServerError> {
        Ok(EngineConfig {
            templates,
            webhook_allow: self.allow_list()?,
            defaults: self.defaults.clone(),
            metrics_window: self.metrics_window,
            check_tick: self.check_tick,
            auto: self.auto,
            auto_interval: self.auto_interval,
            scale_down_delay: self.scale_down_delay,
            observer: self.observer()?.name().to_owned(),
            retention: crate::store::prune::Retention {
                per_target: self.retain_per_target,
                max_age: self.retain_for,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_observer_is_a_configuration_error_naming_the_known_ones() {
        let config = ServerConfig::default();
        assert_eq!(config.observer().map(|o| o.name()).ok(), Some("istio"));
        let config = ServerConfig {
            observer: "linkerd2".into(),
            ..ServerConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("unknown observer \"linkerd2\""), "{error}");
        assert!(error.contains("known are istio"), "{error}");
    }
}
