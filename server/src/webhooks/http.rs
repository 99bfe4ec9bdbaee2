//! Webhooks over HTTP: a JSON POST per call, bounded by the hook's timeout, redirects never
//! followed (a redirect could lead past the allow-list), signed with HMAC-SHA256 when the
//! server has a secret (`--webhook-secret-file`, re-read on SIGHUP).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{AllowList, Payload, Webhooks};
use crate::domain::{HookOutcome, Webhook};

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Steerer-Signature";

/// Bytes of a refusing answer's body kept for the person reading the check.
const BODY_EXCERPT: usize = 160;

/// A problem with the webhook secret file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read webhook secret file {path}: {message}")]
    Read { path: String, message: String },
    #[error("webhook secret file {path} is empty")]
    Empty { path: String },
}

/// The key webhook bodies are signed with, if any.
#[derive(Debug, Default)]
pub struct WebhookSecret {
    path: Option<PathBuf>,
    key: RwLock<Option<Arc<Vec<u8>>>>,
}

impl WebhookSecret {
    /// No secret: bodies go unsigned.
    pub fn none() -> Self {
        Self::default()
    }

    /// A key given directly.
    pub fn from_key(key: &[u8]) -> Self {
        Self {
            path: None,
            key: RwLock::new(Some(Arc::new(key.to_vec()))),
        }
    }

    /// Reads the key from a file (surrounding white space, a final newline say, is not part
    /// of it).
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        Ok(Self {
            path: Some(path.to_owned()),
            key: RwLock::new(Some(Arc::new(read_key(path)?))),
        })
    }

    /// Re-reads the file; a file that no longer reads keeps the key as it was.
    pub fn reload(&self) -> Result<(), SecretError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let key = read_key(path)?;
        if let Ok(mut current) = self.key.write() {
            *current = Some(Arc::new(key));
        }
        Ok(())
    }

    fn key(&self) -> Option<Arc<Vec<u8>>> {
        self.key.read().ok().and_then(|k| k.clone())
    }
}

fn read_key(path: &Path) -> Result<Vec<u8>, SecretError> {
    let shown = path.display().to_string();
    let text = std::fs::read(path).map_err(|e| SecretError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let key = text.trim_ascii().to_vec();
    if key.is_empty() {
        return Err(SecretError::Empty { path: shown });
    }
    Ok(key)
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `key`: the signature header's value.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Calls webhooks with reqwest.
pub struct HttpWebhooks {
    http: reqwest::Client,
    allow: AllowList,
    secret: Arc<WebhookSecret>,
}

impl HttpWebhooks {
    /// Calls only hosts `allow` allows, signing with `secret` when it has a key.
    pub fn new(allow: AllowList, secret: Arc<WebhookSecret>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("steerer/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            allow,
            secret,
        })
    }
}

impl Webhooks for HttpWebhooks {
    fn call<'a>(&'a self, hook: &'a Webhook, payload: &'a Payload) -> BoxFuture<'a, HookOutcome> {
        Box::pin(async move {
            // Checked again at each call: the allow-list may have narrowed since the start.
            let url = match self.allow.check(&hook.url) {
                Ok(url) => url,
                Err(refused) => return HookOutcome::Failed(format!("not called: {refused}")),
            };
            let body = match serde_json::to_vec(payload) {
                Ok(body) => body,
                Err(error) => return HookOutcome::Failed(format!("not called: {error}")),
            };
            let mut request = self
                .http
                .post(url)
                .timeout(hook.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            if let Some(key) = self.secret.key() {
                request = request.header(SIGNATURE_HEADER, signature(&key, &body));
            }
            match request.body(body).send().await {
                Ok(response) => {
                    let status = response.status();
                    let body = if status.is_success() {
                        String::new()
                    } else {
                        excerpt(response).await
                    };
                    HookOutcome::Answered {
                        status: status.as_u16(),
                        body,
                    }
                }
                Err(error) => HookOutcome::Failed(describe(&error, hook.timeout)),
            }
        })
    }
}

/// The start of an answer's body, as one line of printable text.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(BODY_EXCERPT);
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why a call got no answer, for a person.
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if error.is_connect() {
        format!("could not connect: {cause}")
    } else {
        format!("request failed: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_secret_file_is_read_trimmed_and_reloaded_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        let secret = WebhookSecret::load(&path).unwrap();
        assert_eq!(secret.key().unwrap().as_slice(), b"s3cret");
        std::fs::write(&path, "rotated").unwrap();
        secret.reload().unwrap();
        assert_eq!(secret.key().unwrap().as_slice(), b"rotated");
        std::fs::write(&path, "  \n").unwrap();
        assert!(matches!(secret.reload(), Err(SecretError::Empty { .. })));
        assert_eq!(secret.key().unwrap().as_slice(), b"rotated");
        assert!(WebhookSecret::load(&dir.path().join("missing")).is_err());
    }

    /// A local hook server: `/ok` answers 200 and records the signature header and body,
    /// `/no` 403 with a reason, `/moved` a redirect, `/slow` never in time.
    async fn hook_server() -> (String, Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>) {
        use axum::Router;
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::post;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = Router::new()
            .route(
                "/ok",
                post(move |headers: HeaderMap, body: Bytes| async move {
                    let signature = headers
                        .get(SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    log.lock().unwrap().push((signature, body.to_vec()));
                    StatusCode::OK
                }),
            )
            .route(
                "/no",
                post(|| async { (StatusCode::FORBIDDEN, "not\nbefore 18:00") }),
            )
            .route(
                "/moved",
                post(|| async { (StatusCode::FOUND, [("location", "http://evil.example/")]) }),
            )
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    StatusCode::OK
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, seen)
    }

    fn webhook(url: String, timeout: Duration) -> Webhook {
        Webhook {
            name: "hook".into(),
            kind: crate::domain::WebhookKind::Rollout,
            url,
            timeout,
            metadata: Default::default(),
        }
    }

    fn payload() -> Payload {
        Payload {
            name: "hook".into(),
            kind: "ROLLOUT",
            namespace: "test".into(),
            target: "podinfo".into(),
            canary: "podinfo-canary".into(),
            rollout_id: "r1".into(),
            revision: "abc".into(),
            phase: "PROGRESSING",
            canary_weight: 20,
            metadata: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_call_posts_the_signed_body_and_reports_answers_refusals_redirects_and_timeouts() {
        let (base, seen) = hook_server().await;
        let allow = AllowList::parse(&["127.0.0.1".to_owned()]).unwrap();
        let hooks = HttpWebhooks::new(allow, Arc::new(WebhookSecret::from_key(b"s3cret"))).unwrap();
        let second = Duration::from_secs(1);
        let body = payload();

        let ok = hooks
            .call(&webhook(format!("{base}/ok"), second), &body)
            .await;
        assert_eq!(
            ok,
            HookOutcome::Answered {
                status: 200,
                body: String::new()
            }
        );
        let (signature, sent) = seen.lock().unwrap()[0].clone();
        assert_eq!(signature, super::signature(b"s3cret", &sent));
        let sent: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(sent["rolloutId"], "r1");
        assert_eq!(sent["canaryWeight"], 20);

        let no = hooks
            .call(&webhook(format!("{base}/no"), second), &body)
            .await;
        assert_eq!(
            no,
            HookOutcome::Answered {
                status: 403,
                body: "not before 18:00".into()
            }
        );
        let moved = hooks
            .call(&webhook(format!("{base}/moved"), second), &body)
            .await;
        assert!(
            matches!(moved, HookOutcome::Answered { status: 302, .. }),
            "a redirect is an answer, not followed: {moved:?}"
        );
        let slow = hooks
            .call(
                &webhook(format!("{base}/slow"), Duration::from_millis(200)),
                &body,
            )
            .await;
        assert_eq!(slow, HookOutcome::Failed("timed out after 200ms".into()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = hooks
            .call(&webhook(format!("http://127.0.0.1:{port}/"), second), &body)
            .await;
        assert!(
            matches!(&refused, HookOutcome::Failed(why) if why.starts_with("could not connect")),
            "{refused:?}"
        );
        let elsewhere = hooks
            .call(&webhook("http://localhost/ok".into(), second), &body)
            .await;
        assert!(
            matches!(&elsewhere, HookOutcome::Failed(why) if why.contains("not allowed")),
            "{elsewhere:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "only /ok recorded a call");
    }

    #[tokio::test]
    async fn without_a_secret_the_body_goes_unsigned() {
        let (base, seen) = hook_server().await;
        let allow = AllowList::parse(&["127.0.0.1".to_owned()]).unwrap();
        let hooks = HttpWebhooks::new(allow, Arc::new(WebhookSecret::none())).unwrap();
        let ok = hooks
            .call(
                &webhook(format!("{base}/ok"), Duration::from_secs(1)),
                &payload(),
            )
            .await;
        assert!(matches!(ok, HookOutcome::Answered { status: 200, .. }));
        assert_eq!(seen.lock().unwrap()[0].0, "");
    }
}
