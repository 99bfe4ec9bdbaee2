//! Kubernetes-native authentication and authorization (`--auth kubernetes`): a bearer token is
//! whatever the cluster accepts, checked with a TokenReview; a client certificate (under
//! `--client-ca`) names the user (CN) and groups (O) as kube-apiserver reads them; every call
//! is authorized with a SubjectAccessReview on `steerer.dev/rollouts`. Answers are cached for a
//! short time; when the API server cannot answer, the call gets UNAVAILABLE, never a pass.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tonic::Status;

use super::access::{Authorizer, Caller, Verb};

/// Cached answers kept at most (the cache is emptied when it grows past this).
const MAX_CACHED: usize = 10_000;

/// Settings of Kubernetes authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeAuthConfig {
    /// Audiences a token must be meant for (empty = the API server's own).
    pub audiences: Vec<String>,
    /// How long a TokenReview or SubjectAccessReview answer is reused.
    pub cache_ttl: Duration,
}

type Decision = (String, Vec<String>, Verb, String);

/// A cache of answers with the time each was had.
type Cache<K, V> = Mutex<HashMap<K, (Instant, V)>>;

/// TokenReviews and SubjectAccessReviews through the API server.
pub struct KubeAuth {
    client: kube::Client,
    config: KubeAuthConfig,
    tokens: Cache<[u8; 32], Option<Caller>>,
    decisions: Cache<Decision, bool>,
}

fn cached<K: std::hash::Hash + Eq, V: Clone>(
    map: &Cache<K, V>,
    key: &K,
    ttl: Duration,
) -> Option<V> {
    let map = map.lock().ok()?;
    map.get(key)
        .filter(|(at, _)| at.elapsed() < ttl)
        .map(|(_, v)| v.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(map: &Cache<K, V>, key: K, value: V) {
    if let Ok(mut map) = map.lock() {
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(key, (Instant::now(), value));
    }
}

fn unavailable(what: &str, error: kube::Error) -> Status {
    tracing::warn!(%error, "{what} failed");
    Status::unavailable(format!(
        "the Kubernetes API server could not {what} ({error}); try again"
    ))
}

impl KubeAuth {
    pub fn new(client: kube::Client, config: KubeAuthConfig) -> Self {
        Self {
            client,
            config,
            tokens: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// The caller a bearer token stands for: UNAUTHENTICATED when the cluster does not accept
    /// it (for these audiences), UNAVAILABLE when the API server does not answer.
    pub async fn review_token(&self, token: &str) -> Result<Caller, Status> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let answer = match cached(&self.tokens, &key, self.config.cache_ttl) {
            Some(answer) => answer,
            None => {
                let review = TokenReview {
                    spec: TokenReviewSpec {
                        token: Some(token.to_owned()),
                        audiences: (!self.config.audiences.is_empty())
                            .then(|| self.config.audiences.clone()),
                    },
                    ..Default::default()
                };
                let reviewed = Api::<TokenReview>::all(self.client.clone())
                    .create(&PostParams::default(), &review)
                    .await
                    .map_err(|e| unavailable("review the token", e))?;
                let status = reviewed.status.unwrap_or_default();
                let caller = status
                    .authenticated
                    .unwrap_or(false)
                    .then_some(status.user)
                    .flatten()
                    .and_then(|user| {
                        Some(Caller {
                            user: user.username.filter(|u| !u.is_empty())?,
                            groups: user.groups.unwrap_or_default(),
                        })
                    });
                if caller.is_none()
                    && let Some(error) = status.error.filter(|e| !e.is_empty())
                {
                    tracing::debug!(%error, "a token was not accepted");
                }
                remember(&self.tokens, key, caller.clone());
                caller
            }
        };
        answer.ok_or_else(|| {
            Status::unauthenticated("the bearer token is not accepted by the cluster")
        })
    }
}

impl Authorizer for KubeAuth {
    fn allows<'a>(
        &'a self,
        caller: &'a Caller,
        verb: Verb,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<bool, Status>> {
        Box::pin(async move {
            let key = (
                caller.user.clone(),
                caller.groups.clone(),
                verb,
                namespace.to_owned(),
            );
            if let Some(allowed) = cached(&self.decisions, &key, self.config.cache_ttl) {
                return Ok(allowed);
            }
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(caller.user.clone()),
                    groups: Some(caller.groups.clone()),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some("steerer.dev".into()),
                        resource: Some("rollouts".into()),
                        verb: Some(verb.as_str().into()),
                        namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| unavailable("authorize the call", e))?;
            let allowed = reviewed
                .status
                .is_some_and(|s| s.allowed && !s.denied.unwrap_or(false));
            remember(&self.decisions, key, allowed);
            Ok(allowed)
        })
    }
}

/// The caller a verified client certificate names: the subject's CN is the user and each O a
/// group, as kube-apiserver reads client certificates.
pub fn certificate_caller(der: &[u8]) -> Result<Caller, Status> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| Status::unauthenticated("the client certificate cannot be read"))?;
    let subject = certificate.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| Status::unauthenticated("the client certificate has no common name"))?;
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    Ok(Caller {
        user: user.to_owned(),
        groups,
    })
}
