//! The [`Client`] handle (one method per RPC) and the [`ClientBuilder`] that sets up its
//! connection: endpoint, TLS, credentials and timeouts.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use steerer::v1::rollout_service_client::RolloutServiceClient;
use steerer::v1::{
    AbortRolloutRequest, GetRolloutRequest, GetServerInfoRequest, ListRolloutsRequest,
    ListRolloutsResponse, PauseRolloutRequest, PromoteRolloutRequest, ResumeRolloutRequest,
    Rollout, RolloutEvent, ServerInfo, StartRolloutRequest, WatchRolloutRequest,
};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::auth::{AuthProvider, StaticToken};
use crate::error::ClientError;
use crate::reconnect::ReconnectPolicy;

/// The endpoint [`Client::connect`] documents as the usual local one.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// A handle to a steerer server. Cheap to clone; clones share one HTTP/2 connection.
///
/// Every method sends the credentials of the configured [`AuthProvider`] and, for unary calls,
/// gives up after the configured timeout (30 s by default) with
/// [`ClientError::DeadlineExceeded`]. The connection itself is re-established by the transport
/// when it breaks: a call made after a server restart simply connects again.
#[derive(Clone)]
pub struct Client {
    inner: RolloutServiceClient<Channel>,
    auth: Option<Arc<dyn AuthProvider>>,
    timeout: Option<Duration>,
    reconnect: ReconnectPolicy,
    endpoint: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("reconnect", &self.reconnect)
            .field("auth", &self.auth.as_ref().map(|_| ".."))
            .finish()
    }
}

/// PEM bytes given directly, or a file read when the client connects.
#[derive(Clone, Debug)]
enum Pem {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Pem {
    fn load(&self, what: &str) -> Result<Vec<u8>, ClientError> {
        match self {
            Pem::Bytes(bytes) => Ok(bytes.clone()),
            Pem::File(path) => std::fs::read(path).map_err(|e| {
                ClientError::config(format!("cannot read {what} {}: {e}", path.display()))
            }),
        }
    }
}

/// Sets up a [`Client`]: endpoint, TLS, credentials, timeouts and the watch reconnect policy.
///
/// ```no_run
/// # async fn demo() -> Result<(), steerer_client::ClientError> {
/// use std::time::Duration;
/// use steerer_client::Client;
///
/// let client = Client::builder("https://steerer.example.com:443")
///     .ca_certificate_file("/etc/steerer/ca.pem")
///     .client_identity_files("/etc/steerer/ci.pem", "/etc/steerer/ci.key")
///     .bearer_token(std::env::var("STEERER_TOKEN").unwrap_or_default())
///     .timeout(Duration::from_secs(10))
///     .connect()
///     .await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    endpoint: String,
    auth: Option<Arc<dyn AuthProvider>>,
    ca: Option<Pem>,
    identity: Option<(Pem, Pem)>,
    tls_server_name: Option<String>,
    timeout: Option<Duration>,
    connect_timeout: Duration,
    keepalive: Option<Duration>,
    lazy: bool,
    reconnect: ReconnectPolicy,
}

impl ClientBuilder {
    /// A builder for `endpoint` (`http://host:port` or `https://host:port`; a bare `host:port`
    /// means `http://`).
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            auth: None,
            ca: None,
            identity: None,
            tls_server_name: None,
            timeout: Some(DEFAULT_TIMEOUT),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keepalive: Some(DEFAULT_KEEPALIVE),
            lazy: false,
            reconnect: ReconnectPolicy::default(),
        }
    }

    /// Sends `authorization: Bearer TOKEN` on every call. An empty token sends nothing.
    pub fn bearer_token(mut self, token: impl AsRef<str>) -> Self {
        let token = token.as_ref().trim();
        self.auth = if token.is_empty() {
            None
        } else {
            Some(Arc::new(StaticToken::bearer(token)))
        };
        self
    }

    /// Uses `provider` for the credentials of every call (replacing any bearer token).
    pub fn auth(mut self, provider: impl AuthProvider) -> Self {
        self.auth = Some(Arc::new(provider));
        self
    }

    /// Uses a shared provider for the credentials of every call.
    pub fn auth_arc(mut self, provider: Arc<dyn AuthProvider>) -> Self {
        self.auth = Some(provider);
        self
    }

    /// Trusts this CA (PEM) for the server's certificate instead of the platform's roots.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(Pem::Bytes(pem.into()));
        self
    }

    /// Trusts the CA in this PEM file, read when the client connects.
    pub fn ca_certificate_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(Pem::File(path.into()));
        self
    }

    /// Presents this client certificate and key (PEM) for mutual TLS.
    pub fn client_identity_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((Pem::Bytes(cert.into()), Pem::Bytes(key.into())));
        self
    }

    /// Presents the client certificate and key in these PEM files for mutual TLS.
    pub fn client_identity_files(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.identity = Some((Pem::File(cert.into()), Pem::File(key.into())));
        self
    }

    /// Checks the server's certificate against this name instead of the endpoint's host (for
    /// example when connecting by IP address or through a port-forward).
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_server_name = Some(name.into());
        self
    }

    /// How long a unary call may take, connection included (default 30 s); `None` waits
    /// forever. Also bounds opening each watch stream, but not the stream itself.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// How long establishing the TCP/TLS connection may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// HTTP/2 keepalive ping interval (default 30 s), so a watch notices a silently dead
    /// connection; `None` turns pings off.
    pub fn keepalive(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.keepalive = interval.into();
        self
    }

    /// Whether [`connect`](Self::connect) defers connecting to the first call (default
    /// `false`: it connects eagerly, so an unreachable server is reported right away).
    pub fn lazy(mut self, lazy: bool) -> Self {
        self.lazy = lazy;
        self
    }

    /// How [`Client::watch`] reconnects after the stream breaks.
    pub fn reconnect_policy(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Builds the TLS settings and the channel, and (unless [`lazy`](Self::lazy)) connects.
    ///
    /// Fails with [`ClientError::Config`] for a malformed endpoint, unreadable PEM files, or
    /// TLS options on a plain `http://` endpoint, and with [`ClientError::Transport`] when an
    /// eager connection cannot be established.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let endpoint_text = normalise_endpoint(&self.endpoint);
        let mut endpoint = Endpoint::from_shared(endpoint_text.clone()).map_err(|e| {
            ClientError::config(format!("invalid server address {:?}: {e}", self.endpoint))
        })?;
        let https = endpoint.uri().scheme_str() == Some("https");
        let wants_tls =
            self.ca.is_some() || self.identity.is_some() || self.tls_server_name.is_some();
        if wants_tls && !https {
            return Err(ClientError::config(format!(
                "TLS options need an https:// server address, got {endpoint_text}"
            )));
        }
        if https {
            let mut tls = ClientTlsConfig::new();
            tls = match &self.ca {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(ca.load("CA certificate")?)),
                None => tls.with_enabled_roots(),
            };
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(
                    cert.load("client certificate")?,
                    key.load("client key")?,
                ));
            }
            if let Some(name) = &self.tls_server_name {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ClientError::config(format!("invalid TLS settings: {e}")))?;
        }
        endpoint = endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(interval) = self.keepalive {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_while_idle(true)
                .keep_alive_timeout(Duration::from_secs(20));
        }
        let channel = if self.lazy {
            endpoint.connect_lazy()
        } else {
            match self.timeout {
                Some(limit) => tokio::time::timeout(limit, endpoint.connect())
                    .await
                    .map_err(|_| ClientError::DeadlineExceeded {
                        message: format!(
                            "no connection to {endpoint_text} within {}",
                            humantime::format_duration(limit)
                        ),
                    })??,
                None => endpoint.connect().await?,
            }
        };
        Ok(Client {
            inner: RolloutServiceClient::new(channel),
            auth: self.auth,
            timeout: self.timeout,
            reconnect: self.reconnect,
            endpoint: endpoint_text,
        })
    }
}

/// `host:port` without a scheme means plain HTTP/2, the way grpcurl's `-plaintext` reads it.
fn normalise_endpoint(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

impl Client {
    /// Connects eagerly to `endpoint` with no credentials and default timeouts.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), steerer_client::ClientError> {
    /// let client = steerer_client::Client::connect("http://127.0.0.1:50051").await?;
    /// let rollout = client.get("r-7f3c").await?;
    /// println!("{} is {:?} at {}%", rollout.id, rollout.phase(), rollout.canary_weight);
    /// # Ok(()) }
    /// ```
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        ClientBuilder::new(endpoint).connect().await
    }

    /// A [`ClientBuilder`] for `endpoint`, for TLS, credentials and timeouts.
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(endpoint)
    }

    /// The server address this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The policy [`watch`](Self::watch) reconnects with.
    pub fn reconnect_policy(&self) -> &ReconnectPolicy {
        &self.reconnect
    }

    /// A clone of this client that watches with another reconnect policy.
    pub fn with_reconnect_policy(&self, policy: ReconnectPolicy) -> Self {
        Self {
            reconnect: policy,
            ..self.clone()
        }
    }

    /// The generated client underneath, for anything this SDK does not wrap. It sends no
    /// credentials by itself.
    pub fn raw(&self) -> RolloutServiceClient<Channel> {
        self.inner.clone()
    }

    /// Starts a rollout (`StartRollout`). Fields left empty take the server's defaults; the
    /// returned rollout carries the settings in force.
    ///
    /// ```no_run
    /// # async fn demo(client: steerer_client::Client) -> Result<(), steerer_client::ClientError> {
    /// use steerer_client::proto::{Analysis, StartRolloutRequest};
    ///
    /// let rollout = client
    ///     .start(StartRolloutRequest {
    ///         namespace: "shop".into(),
    ///         target: "checkout".into(),
    ///         images: [("app".to_string(), "registry.example/checkout:1.4.2".to_string())].into(),
    ///         analysis: Some(Analysis { step_weight: Some(20), ..Default::default() }),
    ///         request_id: "pipeline-4711".into(),
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// println!("started {}", rollout.id);
    /// # Ok(()) }
    /// ```
    pub async fn start(&self, request: StartRolloutRequest) -> Result<Rollout, ClientError> {
        self.unary(request, |mut c, r| async move { c.start_rollout(r).await })
            .await
    }

    /// Returns one rollout (`GetRollout`).
    pub async fn get(&self, id: impl Into<String>) -> Result<Rollout, ClientError> {
        let request = GetRolloutRequest { id: id.into() };
        self.unary(request, |mut c, r| async move { c.get_rollout(r).await })
            .await
    }

    /// The server's version, commit, leader, route kinds, observers and authentication
    /// (`GetServerInfo`); any authenticated caller may ask.
    pub async fn server_info(&self) -> Result<ServerInfo, ClientError> {
        self.unary(GetServerInfoRequest {}, |mut c, r| async move {
            c.get_server_info(r).await
        })
        .await
    }

    /// One page of rollouts, newest first (`ListRollouts`), with the token of the next page.
    pub async fn list_page(
        &self,
        request: ListRolloutsRequest,
    ) -> Result<ListRolloutsResponse, ClientError> {
        self.unary(request, |mut c, r| async move { c.list_rollouts(r).await })
            .await
    }

    /// Lists rollouts, newest first, following the pages until the last one or until `limit`
    /// rollouts (0 = no limit).
    pub async fn list(
        &self,
        mut request: ListRolloutsRequest,
        limit: usize,
    ) -> Result<Vec<Rollout>, ClientError> {
        let mut all = Vec::new();
        loop {
            let page = self.list_page(request.clone()).await?;
            all.extend(page.rollouts);
            if limit > 0 && all.len() >= limit {
                all.truncate(limit);
                return Ok(all);
            }
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            request.page_token = page.next_page_token;
        }
    }

    /// Aborts a rollout (`AbortRollout`): all traffic back on GA. Aborting a finished rollout
    /// changes nothing and returns it as it is.
    pub async fn abort(
        &self,
        id: impl Into<String>,
        reason: impl Into<String>,
    ) -> Result<Rollout, ClientError> {
        let request = AbortRolloutRequest {
            id: id.into(),
            reason: reason.into(),
        };
        self.unary(request, |mut c, r| async move { c.abort_rollout(r).await })
            .await
    }

    /// Holds a rollout at its current weight (`PauseRollout`).
    pub async fn pause(
        &self,
        id: impl Into<String>,
        reason: impl Into<String>,
    ) -> Result<Rollout, ClientError> {
        let request = PauseRolloutRequest {
            id: id.into(),
            reason: reason.into(),
        };
        self.unary(request, |mut c, r| async move { c.pause_rollout(r).await })
            .await
    }

    /// Continues a paused rollout (`ResumeRollout`).
    pub async fn resume(&self, id: impl Into<String>) -> Result<Rollout, ClientError> {
        let request = ResumeRolloutRequest { id: id.into() };
        self.unary(request, |mut c, r| async move { c.resume_rollout(r).await })
            .await
    }

    /// Skips the remaining analysis and promotes the canary now (`PromoteRollout`).
    pub async fn promote(&self, id: impl Into<String>) -> Result<Rollout, ClientError> {
        let request = PromoteRolloutRequest { id: id.into() };
        self.unary(
            request,
            |mut c, r| async move { c.promote_rollout(r).await },
        )
        .await
    }

    /// Opens one `WatchRollout` stream (no reconnects), bounded by the unary timeout until the
    /// server answers.
    pub(crate) async fn open_watch(
        &self,
        id: &str,
        from_sequence: u64,
    ) -> Result<tonic::Streaming<RolloutEvent>, ClientError> {
        let request = WatchRolloutRequest {
            id: id.to_string(),
            from_sequence,
        };
        let request = self.request(request, false).await?;
        let mut inner = self.inner.clone();
        let call = async move { inner.watch_rollout(request).await };
        let response = self.bounded(call).await?;
        Ok(response.into_inner())
    }

    async fn unary<Req, Resp, F, Fut>(&self, message: Req, call: F) -> Result<Resp, ClientError>
    where
        F: FnOnce(RolloutServiceClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let request = self.request(message, true).await?;
        let response = self.bounded(call(self.inner.clone(), request)).await?;
        Ok(response.into_inner())
    }

    /// Awaits `call` within the client's timeout, mapping a gRPC status to [`ClientError`].
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<tonic::Response<T>, ClientError> {
        let result = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| {
                ClientError::DeadlineExceeded {
                    message: format!(
                        "no answer from {} within {}",
                        self.endpoint,
                        humantime::format_duration(limit)
                    ),
                }
            })?,
            None => call.await,
        };
        result.map_err(ClientError::from)
    }

    /// Wraps `message` with the provider's credentials and, for unary calls, a `grpc-timeout`
    /// so the server stops working on a call the client gave up on.
    async fn request<T>(&self, message: T, unary: bool) -> Result<tonic::Request<T>, ClientError> {
        let mut request = tonic::Request::new(message);
        if let Some(auth) = &self.auth {
            let header = auth
                .authorization()
                .await
                .map_err(|e| ClientError::Auth { message: e.0 })?;
            if let Some(header) = header {
                let value =
                    MetadataValue::try_from(header.as_str()).map_err(|_| ClientError::Auth {
                        message: "the authorization value is not a valid header value".into(),
                    })?;
                request.metadata_mut().insert("authorization", value);
            }
        }
        if unary && let Some(limit) = self.timeout {
            request.set_timeout(limit);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_a_scheme_is_plain_http() {
        assert_eq!(
            normalise_endpoint("127.0.0.1:50051"),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            normalise_endpoint(" https://steerer.example:443 "),
            "https://steerer.example:443"
        );
    }

    #[tokio::test]
    async fn tls_options_on_a_plain_endpoint_are_a_configuration_error() {
        let err = Client::builder("http://127.0.0.1:1")
            .ca_certificate_pem(b"x".to_vec())
            .lazy(true)
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Config { .. }), "{err:?}");
        assert!(err.to_string().contains("https://"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_ca_file_is_named_in_the_error() {
        let err = Client::builder("https://127.0.0.1:1")
            .ca_certificate_file("/nonexistent/ca.pem")
            .lazy(true)
            .connect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_by_an_eager_connect() {
        // Bind then drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Client::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }
}
