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
}
