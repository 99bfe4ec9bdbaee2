//! Errors starting or running the server.

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
    /// The Rollout CRD is missing, older than the server, or could not be checked: the
    /// message is one line saying what to install.
    #[error(transparent)]
    Crd(#[from] crate::store::schema::SchemaError),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}
