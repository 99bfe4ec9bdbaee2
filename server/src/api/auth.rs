//! Bearer-token authentication of `RolloutService` calls: token files (one accepted token a
//! line, re-read when they change), constant-time comparison, read-only tokens that may call
//! Get/List/Watch but nothing that changes a rollout, and the tower layer that checks every
//! call before it reaches a handler. An RPC missing from [`rpc_access`] is denied.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::access::{Access, AllowAll, Caller, Need};
use super::kubeauth::{KubeAuth, certificate_caller};
use super::limits::Limits;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use tonic::Status;
use tonic::server::NamedService;

/// How often a token file is looked at again for changes (a `stat`, not a read).
const RECHECK: Duration = Duration::from_secs(1);

/// A file's (modified, length): a change of either means a reload.
type Stamp = (SystemTime, u64);

/// What a call needs of a token-file token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAccess {
    /// Get, List, Watch.
    Read,
    /// Start, Abort, Pause, Resume, Promote.
    Write,
}

/// Errors loading a token file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("failed to read token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {0} holds no token")]
    Empty(PathBuf),
}

/// One token file and the digests of the tokens it held when last read.
struct TokenFile {
    path: PathBuf,
    digests: Vec<[u8; 32]>,
    stamp: Option<Stamp>,
    checked: Instant,
}

impl TokenFile {
    fn load(path: &Path) -> Result<Self, AuthError> {
        let (digests, stamp) = read_tokens(path)?;
        Ok(Self {
            path: path.to_owned(),
            digests,
            stamp,
            checked: Instant::now(),
        })
    }

    /// Re-reads the file when it changed. A file that became unreadable or empty keeps the
    /// tokens it had: a half-written file must not lock every caller out (or let anyone in).
    fn refresh(&mut self, force: bool) {
        if !force && self.checked.elapsed() < RECHECK {
            return;
        }
        self.checked = Instant::now();
        if !force && stamp(&self.path) == self.stamp {
            return;
        }
        match read_tokens(&self.path) {
            Ok((digests, stamp)) => {
                if digests != self.digests {
                    tracing::info!(path = %self.path.display(), tokens = digests.len(), "token file reloaded");
                }
                self.digests = digests;
                self.stamp = stamp;
            }
            Err(error) => {
                tracing::warn!(%error, "keeping the tokens read before");
            }
        }
    }

    fn accepts(&self, presented: &[u8; 32]) -> bool {
        // Every stored digest is compared in full, whatever matched earlier.
        self.digests
            .iter()
            .fold(Choice::from(0), |found, d| found | d.ct_eq(presented))
            .into()
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_tokens(path: &Path) -> Result<(Vec<[u8; 32]>, Option<Stamp>), AuthError> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_owned(),
        source,
    })?;
    let digests: Vec<[u8; 32]> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(digest)
        .collect();
    if digests.is_empty() {
        return Err(AuthError::Empty(path.to_owned()));
    }
    Ok((digests, stamp))
}

/// Tokens are compared as SHA-256 digests, so the comparison takes the same time whatever
/// their lengths and wherever they differ.
fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Who may call what. With no token file every call is allowed.
pub struct Auth {
    write: Option<Mutex<TokenFile>>,
    read_only: Option<Mutex<TokenFile>>,
}

impl Auth {
    /// No authentication.
    pub fn open() -> Self {
        Self {
            write: None,
            read_only: None,
        }
    }

    /// Reads the token files. Either set turns authentication on; with only read-only tokens,
    /// nobody can change a rollout.
    pub fn from_files(
        tokens: Option<&Path>,
        read_only_tokens: Option<&Path>,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            write: tokens.map(TokenFile::load).transpose()?.map(Mutex::new),
            read_only: read_only_tokens
                .map(TokenFile::load)
                .transpose()?
                .map(Mutex::new),
        })
    }

    /// Whether calls need a token.
    pub fn enabled(&self) -> bool {
        self.write.is_some() || self.read_only.is_some()
    }

    /// Re-reads both files now (on SIGHUP).
    pub fn reload(&self) {
        for file in [&self.write, &self.read_only].into_iter().flatten() {
            if let Ok(mut f) = file.lock() {
                f.refresh(true);
            }
        }
    }

    fn accepts(file: &Option<Mutex<TokenFile>>, presented: &[u8; 32]) -> bool {
        let Some(file) = file else { return false };
        let Ok(mut f) = file.lock() else { return false };
        f.refresh(false);
        f.accepts(presented)
    }

    /// Checks a call's `authorization: Bearer TOKEN` header for `access`; `None` (an RPC
    /// nobody classified) is denied to every token.
    pub fn check(
        &self,
        headers: &http::HeaderMap,
        access: Option<TokenAccess>,
    ) -> Result<(), Status> {
        if !self.enabled() {
            return Ok(());
        }
        let token = bearer(headers)?
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        let presented = digest(token);
        let writer = Self::accepts(&self.write, &presented);
        if !writer && !Self::accepts(&self.read_only, &presented) {
            return Err(Status::unauthenticated("the bearer token is not valid"));
        }
        match access {
            Some(TokenAccess::Write) if !writer => Err(Status::permission_denied(
                "this token is read-only: it may get, list and watch rollouts, not change them",
            )),
            Some(_) => Ok(()),
            None => Err(Status::permission_denied(
                "this RPC is not open to any token (the server does not classify it)",
            )),
        }
    }
}

/// The access each `steerer.v1.RolloutService` RPC needs. A method missing here is denied to
/// every token: a new RPC must be classified before anyone can call it.
pub fn rpc_access(method: &str) -> Option<TokenAccess> {
    match method {
        "GetRollout" | "ListRollouts" | "WatchRollout" | "GetServerInfo" => Some(TokenAccess::Read),
        "StartRollout" | "AbortRollout" | "PauseRollout" | "ResumeRollout" | "PromoteRollout" => {
            Some(TokenAccess::Write)
        }
        _ => None,
    }
}

/// How calls are authenticated, and who authorizes them.
#[derive(Clone)]
pub enum Authentication {
    /// Token files (or none: every call is open); a token's kind decides what it may do.
    Tokens(Arc<Auth>),
    /// Tokens the cluster accepts (TokenReview) and client certificates; every call is
    /// authorized with a SubjectAccessReview.
    Kubernetes(Arc<KubeAuth>),
}

/// Authenticates every call of the service it wraps, gives its handler the caller's
/// [`Access`], limits the rate of mutating calls, and refuses any successful answer whose
/// handler did not obtain an authorization decision (deny by default).
#[derive(Clone)]
pub struct AuthLayer {
    authentication: Authentication,
    limits: Arc<Limits>,
}

impl AuthLayer {
    pub fn new(authentication: Authentication, limits: Arc<Limits>) -> Self {
        Self {
            authentication,
            limits,
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorized {
            inner,
            authentication: self.authentication.clone(),
            limits: self.limits.clone(),
        }
    }
}

/// A gRPC service behind [`AuthLayer`].
#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    authentication: Authentication,
    limits: Arc<Limits>,
}

impl<S: NamedService> NamedService for Authorized<S> {
    const NAME: &'static str = S::NAME;
}

/// The short, non-secret name a token-file token is known by in logs and records.
fn token_name(token: &str) -> String {
    format!("token:{}", &hex::encode(digest(token))[..12])
}

/// The token of a call's `authorization: Bearer TOKEN` header: `None` without the header,
/// UNAUTHENTICATED when the header is there but is not a bearer token.
fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, Status> {
    let Some(header) = headers.get("authorization") else {
        return Ok(None);
    };
    header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Some)
        .ok_or_else(|| Status::unauthenticated("the authorization header must be `Bearer TOKEN`"))
}

/// Who is calling, and the authorizer of their calls.
async fn authenticate(
    authentication: &Authentication,
    headers: &http::HeaderMap,
    certificate: Option<Vec<u8>>,
    need: Need,
) -> Result<Access, Status> {
    match authentication {
        Authentication::Tokens(auth) => {
            let access = match need.is_mutating() {
                true => TokenAccess::Write,
                false => TokenAccess::Read,
            };
            auth.check(headers, Some(access))?;
            let caller = match bearer(headers)? {
                Some(token) if auth.enabled() => Caller {
                    user: token_name(token),
                    groups: Vec::new(),
                },
                _ => Caller::anonymous(),
            };
            Ok(Access::new(caller, Arc::new(AllowAll)))
        }
        Authentication::Kubernetes(kube) => {
            let caller = match bearer(headers)? {
                Some(token) => kube.review_token(token).await?,
                None => match certificate {
                    Some(der) => certificate_caller(&der)?,
                    None => {
                        return Err(Status::unauthenticated(
                            "a bearer token or a client certificate is required",
                        ));
                    }
                },
            };
            Ok(Access::new(caller, kube.clone()))
        }
    }
}

/// Whether a response is a success (an error answer carries `grpc-status` in its headers).
fn succeeded(response: &http::Response<tonic::body::Body>) -> bool {
    response
        .headers()
        .get("grpc-status")
        .is_none_or(|code| code.as_bytes() == b"0")
}

impl<S, B> tower::Service<http::Request<B>> for Authorized<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<S::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authentication = self.authentication.clone();
        let limits = self.limits.clone();
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Box::pin(async move {
            let Some(need) = Need::of_method(&method) else {
                return Ok(Status::permission_denied(
                    "this RPC is not open to anyone (the server does not classify it)",
                )
                .into_http());
            };
            let certificate = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.peer_certs())
                .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
            let headers = request.headers().clone();
            let access = match authenticate(&authentication, &headers, certificate, need).await {
                Ok(access) => access,
                Err(status) => return Ok(status.into_http()),
            };
            if need.is_mutating()
                && let Err(status) = limits.take_mutation(&access.caller().user)
            {
                return Ok(status.into_http());
            }
            request.extensions_mut().insert(access.clone());
            let response = inner.call(request).await?;
            if succeeded(&response) && !access.decided() {
                tracing::error!(
                    need = need.as_str(),
                    "a handler answered without authorizing the call; refused"
                );
                return Ok(Status::permission_denied(
                    "this call was not authorized (the server refuses calls it did not authorize)",
                )
                .into_http());
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::access::Verb;
    use std::io::Write;

    fn file(lines: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(lines.as_bytes()).unwrap();
        f
    }

    fn call(header: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(h) = header {
            headers.insert("authorization", h.parse().unwrap());
        }
        headers
    }

    const READ: Option<TokenAccess> = Some(TokenAccess::Read);
    const WRITE: Option<TokenAccess> = Some(TokenAccess::Write);

    #[test]
    fn open_auth_lets_every_call_through() {
        assert!(Auth::open().check(&call(None), WRITE).is_ok());
    }

    #[test]
    fn tokens_are_checked_line_by_line_ignoring_comments_and_blanks() {
        let tokens = file("# ci\nalpha\n\n  beta  \n");
        let auth = Auth::from_files(Some(tokens.path()), None).unwrap();
        assert!(auth.check(&call(Some("Bearer alpha")), WRITE).is_ok());
        assert!(auth.check(&call(Some("Bearer beta")), WRITE).is_ok());
        for bad in [
            None,
            Some("Bearer gamma"),
            Some("Basic alpha"),
            Some("Bearer "),
        ] {
            let status = auth.check(&call(bad), READ).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let status = auth.check(&call(Some("Bearer # ci")), READ).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn read_only_tokens_may_read_but_not_write() {
        let rw = file("writer\n");
        let ro = file("reader\n");
        let auth = Auth::from_files(Some(rw.path()), Some(ro.path())).unwrap();
        assert!(auth.check(&call(Some("Bearer reader")), READ).is_ok());
        let status = auth.check(&call(Some("Bearer reader")), WRITE).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(auth.check(&call(Some("Bearer writer")), WRITE).is_ok());
    }

    #[test]
    fn an_empty_token_file_is_refused_at_start() {
        let empty = file("# nothing yet\n\n");
        assert!(matches!(
            Auth::from_files(Some(empty.path()), None),
            Err(AuthError::Empty(_))
        ));
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_old_tokens() {
        let tokens = file("old\n");
        let auth = Auth::from_files(Some(tokens.path()), None).unwrap();
        std::fs::write(tokens.path(), "new-token\n").unwrap();
        auth.reload();
        assert!(auth.check(&call(Some("Bearer new-token")), WRITE).is_ok());
        assert!(auth.check(&call(Some("Bearer old")), WRITE).is_err());
        std::fs::write(tokens.path(), "").unwrap();
        auth.reload();
        assert!(auth.check(&call(Some("Bearer new-token")), WRITE).is_ok());
    }

    #[test]
    fn digests_compare_equal_only_when_identical() {
        let file = TokenFile {
            path: PathBuf::new(),
            digests: vec![digest("a"), digest("c")],
            stamp: None,
            checked: Instant::now(),
        };
        assert!(file.accepts(&digest("a")));
        assert!(file.accepts(&digest("c")));
        assert!(!file.accepts(&digest("b")));
    }

    #[test]
    fn every_rpc_of_the_service_is_classified_and_others_are_denied() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(steerer::FILE_DESCRIPTOR_SET).unwrap();
        let service = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .find(|s| s.name() == "RolloutService")
            .unwrap();
        for method in &service.method {
            assert!(rpc_access(method.name()).is_some(), "{}", method.name());
        }
        let tokens = file("writer\n");
        let auth = Auth::from_files(Some(tokens.path()), None).unwrap();
        let status = auth
            .check(&call(Some("Bearer writer")), rpc_access("DeleteEverything"))
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }

    fn call_to(method: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(format!("/steerer.v1.RolloutService/{method}"))
            .body(())
            .unwrap()
    }

    fn code(response: &http::Response<tonic::body::Body>) -> Option<String> {
        response
            .headers()
            .get("grpc-status")
            .map(|c| c.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn a_call_its_handler_did_not_authorize_is_refused_and_an_unknown_rpc_never_runs() {
        use tower::{Layer, Service};
        let layer = AuthLayer::new(
            Authentication::Tokens(Arc::new(Auth::open())),
            Arc::new(Limits::new(Default::default())),
        );
        // A handler that forgets to authorize, and one that does not.
        let forgetful = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let careful = tower::service_fn(|request: http::Request<()>| async move {
            let access = request.extensions().get::<Access>().cloned().unwrap();
            access.require(Verb::Get, "test").await.unwrap();
            Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let refused = layer
            .layer(forgetful)
            .call(call_to("GetRollout"))
            .await
            .unwrap();
        assert_eq!(code(&refused).as_deref(), Some("7"), "PERMISSION_DENIED");
        let answered = layer
            .layer(careful)
            .call(call_to("GetRollout"))
            .await
            .unwrap();
        assert_eq!(code(&answered), None, "the handler's own answer");
        let unknown = layer
            .layer(careful)
            .call(call_to("DropEverything"))
            .await
            .unwrap();
        assert_eq!(code(&unknown).as_deref(), Some("7"));
    }

    #[tokio::test]
    async fn server_info_needs_a_known_token_of_either_kind_and_no_verb() {
        use tower::{Layer, Service};
        let (rw, ro) = (file("writer-token\n"), file("reader-token\n"));
        let layer = AuthLayer::new(
            Authentication::Tokens(Arc::new(
                Auth::from_files(Some(rw.path()), Some(ro.path())).unwrap(),
            )),
            Arc::new(Limits::new(Default::default())),
        );
        let info = tower::service_fn(|request: http::Request<()>| async move {
            let access = request.extensions().get::<Access>().cloned().unwrap();
            access.caller_suffices();
            Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let with = |token: Option<&str>| {
            let mut request = call_to("GetServerInfo");
            if let Some(token) = token {
                request
                    .headers_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
            }
            request
        };
        let anonymous = layer.layer(info).call(with(None)).await.unwrap();
        assert_eq!(code(&anonymous).as_deref(), Some("16"), "UNAUTHENTICATED");
        let unknown = layer.layer(info).call(with(Some("guess"))).await.unwrap();
        assert_eq!(code(&unknown).as_deref(), Some("16"), "UNAUTHENTICATED");
        for token in ["reader-token", "writer-token"] {
            let answered = layer.layer(info).call(with(Some(token))).await.unwrap();
            assert_eq!(code(&answered), None, "{token} gets the handler's answer");
        }
    }
}
