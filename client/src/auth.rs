//! Credentials for calls: the pluggable [`AuthProvider`] and the bearer-token providers that come
//! with the SDK.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

/// The future an [`AuthProvider`] returns: the `authorization` header value for one call, or
/// `None` to send no header.
pub type AuthFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<String>, AuthError>> + Send + 'a>>;

/// Why an [`AuthProvider`] could not produce credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// Supplies the `authorization` metadata of every call.
///
/// The client asks the provider once per RPC (and once per reconnect of a watch), so a provider
/// that refreshes its token — from a file a sidecar rotates, an OIDC exchange, a cloud metadata
/// server — hands out a fresh one each time. The method returns a boxed future so providers can
/// do I/O.
///
/// ```
/// use steerer_client::{AuthError, AuthFuture, AuthProvider};
///
/// /// Reads the token from a file that another process rotates.
/// struct TokenFile(std::path::PathBuf);
///
/// impl AuthProvider for TokenFile {
///     fn authorization(&self) -> AuthFuture<'_> {
///         Box::pin(async move {
///             let token = tokio::fs::read_to_string(&self.0)
///                 .await
///                 .map_err(|e| AuthError(format!("reading {}: {e}", self.0.display())))?;
///             Ok(Some(format!("Bearer {}", token.trim())))
///         })
///     }
/// }
/// ```
pub trait AuthProvider: Send + Sync + 'static {
    /// The full `authorization` header value for the next call (for example `Bearer abc`).
    fn authorization(&self) -> AuthFuture<'_>;
}

/// A fixed bearer token.
#[derive(Clone)]
pub struct StaticToken {
    header: String,
}

impl StaticToken {
    /// A provider that sends `authorization: Bearer TOKEN` on every call.
    pub fn bearer(token: impl AsRef<str>) -> Self {
        Self {
            header: format!("Bearer {}", token.as_ref().trim()),
        }
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the credential itself.
        f.write_str("StaticToken(..)")
    }
}

impl AuthProvider for StaticToken {
    fn authorization(&self) -> AuthFuture<'_> {
        let header = self.header.clone();
        Box::pin(async move { Ok(Some(header)) })
    }
}

/// A bearer token that can be replaced while the client is in use: keep a clone, and call
/// [`SharedToken::set`] from whatever refreshes it. Every later call (and watch reconnect)
/// sends the new token.
#[derive(Clone, Default)]
pub struct SharedToken {
    token: Arc<RwLock<Option<String>>>,
}

impl SharedToken {
    /// A shared token starting with `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: Arc::new(RwLock::new(Some(token.into()))),
        }
    }

    /// Replaces the token for every later call.
    pub fn set(&self, token: impl Into<String>) {
        // A poisoned lock only means a writer panicked mid-assignment of an Option; the value
        // is still a whole Option, so keep going.
        let mut guard = self.token.write().unwrap_or_else(|e| e.into_inner());
        *guard = Some(token.into());
    }

    /// Stops sending a token.
    pub fn clear(&self) {
        let mut guard = self.token.write().unwrap_or_else(|e| e.into_inner());
        *guard = None;
    }

    fn current(&self) -> Option<String> {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedToken(..)")
    }
}

impl AuthProvider for SharedToken {
    fn authorization(&self) -> AuthFuture<'_> {
        let header = self.current().map(|t| format!("Bearer {}", t.trim()));
        Box::pin(async move { Ok(header) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_token_sends_a_bearer_header() {
        let header = StaticToken::bearer(" s3cret\n").authorization().await;
        assert_eq!(header, Ok(Some("Bearer s3cret".to_string())));
    }

    #[tokio::test]
    async fn shared_token_hands_out_the_latest_value() {
        let token = SharedToken::new("one");
        let provider: Arc<dyn AuthProvider> = Arc::new(token.clone());
        assert_eq!(
            provider.authorization().await,
            Ok(Some("Bearer one".into()))
        );
        token.set("two");
        assert_eq!(
            provider.authorization().await,
            Ok(Some("Bearer two".into()))
        );
        token.clear();
        assert_eq!(provider.authorization().await, Ok(None));
    }

    #[test]
    fn debug_output_hides_the_token() {
        assert!(!format!("{:?}", StaticToken::bearer("s3cret")).contains("s3cret"));
        assert!(!format!("{:?}", SharedToken::new("s3cret")).contains("s3cret"));
    }
}
