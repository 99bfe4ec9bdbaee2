//! The SDK's error type: one variant per gRPC outcome a caller acts on, each carrying the
//! server's own reason.

use tonic::Code;

/// An error from a steerer call.
///
/// Server-side outcomes keep the server's message, which is written for a person (for example
/// `rollout "abc" not found`), so `to_string()` is fit to show as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `NOT_FOUND`: the rollout (or one of its Kubernetes objects) does not exist.
    #[error("{message}")]
    NotFound {
        /// The server's reason.
        message: String,
    },
    /// `INVALID_ARGUMENT`: the request was rejected as malformed; nothing changed.
    #[error("invalid request: {message}")]
    InvalidArgument {
        /// The server's reason.
        message: String,
    },
    /// `ALREADY_EXISTS`: the target already has an active rollout.
    #[error("{message}")]
    AlreadyExists {
        /// The server's reason, naming the active rollout.
        message: String,
    },
    /// `FAILED_PRECONDITION`: the rollout is not in a state that allows the operation.
    #[error("{message}")]
    FailedPrecondition {
        /// The server's reason.
        message: String,
    },
    /// `UNAUTHENTICATED`: no credentials, or the server did not accept them.
    #[error("not authenticated: {message}")]
    Unauthenticated {
        /// The server's reason.
        message: String,
    },
    /// `PERMISSION_DENIED`: the credentials are valid but not allowed to do this.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The server's reason.
        message: String,
    },
    /// `UNAVAILABLE`: the server could not be reached or is shutting down. Retrying may help.
    #[error("server unavailable: {message}")]
    Unavailable {
        /// The reason, from the server or the local transport.
        message: String,
    },
    /// `DEADLINE_EXCEEDED`, or no answer within the client's timeout.
    #[error("timed out: {message}")]
    DeadlineExceeded {
        /// What timed out.
        message: String,
    },
    /// The connection could not be set up (TCP, TLS or HTTP/2).
    #[error("cannot connect: {message}")]
    Transport {
        /// The transport's reason, with its causes.
        message: String,
    },
    /// The client was configured wrongly (bad endpoint, unreadable certificate, bad token).
    #[error("invalid client configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// The [`AuthProvider`](crate::AuthProvider) could not produce credentials.
    #[error("cannot get credentials: {message}")]
    Auth {
        /// The provider's reason.
        message: String,
    },
    /// Any other gRPC status.
    #[error("server error ({}): {message}", code_name(*.code))]
    Other {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
    },
}

impl ClientError {
    /// The gRPC code this error stands for (`UNAVAILABLE` for transport failures, `UNKNOWN` for
    /// local configuration and credential errors).
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound { .. } => Code::NotFound,
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::Unauthenticated { .. } => Code::Unauthenticated,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::Unavailable { .. } | Self::Transport { .. } => Code::Unavailable,
            Self::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Self::Config { .. } | Self::Auth { .. } => Code::Unknown,
            Self::Other { code, .. } => *code,
        }
    }

    /// The message without the variant's prefix: the server's reason for server errors.
    pub fn message(&self) -> &str {
        match self {
            Self::NotFound { message }
            | Self::InvalidArgument { message }
            | Self::AlreadyExists { message }
            | Self::FailedPrecondition { message }
            | Self::Unauthenticated { message }
            | Self::PermissionDenied { message }
            | Self::Unavailable { message }
            | Self::DeadlineExceeded { message }
            | Self::Transport { message }
            | Self::Config { message }
            | Self::Auth { message }
            | Self::Other { message, .. } => message,
        }
    }

    /// Whether calling again later may succeed: the server was unreachable, restarting, or
    /// failed in a way that is not about the request itself.
    ///
    /// `NOT_FOUND`, `INVALID_ARGUMENT`, `ALREADY_EXISTS`, `FAILED_PRECONDITION`,
    /// `UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNIMPLEMENTED`, `OUT_OF_RANGE` and local
    /// configuration errors are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Transport { .. } | Self::DeadlineExceeded { .. } => {
                true
            }
            Self::Other { code, .. } => matches!(
                code,
                Code::Unknown
                    | Code::Internal
                    | Code::Cancelled
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::DataLoss
            ),
            _ => false,
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::Config {
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        let message = status_message(&status);
        match status.code() {
            Code::NotFound => Self::NotFound { message },
            Code::InvalidArgument => Self::InvalidArgument { message },
            Code::AlreadyExists => Self::AlreadyExists { message },
            Code::FailedPrecondition => Self::FailedPrecondition { message },
            Code::Unauthenticated => Self::Unauthenticated { message },
            Code::PermissionDenied => Self::PermissionDenied { message },
            Code::Unavailable => Self::Unavailable { message },
            Code::DeadlineExceeded => Self::DeadlineExceeded { message },
            code => Self::Other { code, message },
        }
    }
}

impl From<tonic::transport::Error> for ClientError {
    fn from(err: tonic::transport::Error) -> Self {
        Self::Transport {
            message: error_chain(&err),
        }
    }
}

/// The status message, with its transport cause when tonic produced the status locally (a
/// refused connection reads "tcp connect error: Connection refused", not just the first half).
fn status_message(status: &tonic::Status) -> String {
    let mut message = status
        .message()
        .trim_start_matches("transport error: ")
        .to_string();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let text = err.to_string();
        if !text.is_empty() && !message.contains(&text) && !is_generic(&text) {
            if message.is_empty() {
                message = text;
            } else {
                message = format!("{message}: {text}");
            }
        }
        source = err.source();
    }
    if message.is_empty() {
        message = status.code().description().to_string();
    }
    message
}

/// An error and its causes on one line, skipping causes that repeat their parent's text.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    if is_generic(&message)
        && let Some(cause) = source
    {
        message = cause.to_string();
        source = cause.source();
    }
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !message.contains(&text) && !is_generic(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}

/// Wrapper texts that say nothing their cause does not say better.
fn is_generic(text: &str) -> bool {
    matches!(text, "transport error" | "error trying to connect")
}

/// The canonical upper-case name of a gRPC code (`NOT_FOUND`), as grpcurl and the gRPC docs
/// print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_their_variant_and_keep_the_server_message() {
        let err = ClientError::from(tonic::Status::not_found("rollout \"abc\" not found"));
        assert_eq!(
            err,
            ClientError::NotFound {
                message: "rollout \"abc\" not found".into()
            }
        );
        assert_eq!(err.to_string(), "rollout \"abc\" not found");
        assert_eq!(err.code(), Code::NotFound);

        let err = ClientError::from(tonic::Status::internal("boom"));
        assert_eq!(err.to_string(), "server error (INTERNAL): boom");
        assert_eq!(err.message(), "boom");
    }

    #[test]
    fn an_empty_status_message_falls_back_to_the_code_description() {
        let err = ClientError::from(tonic::Status::unavailable(""));
        assert_eq!(err.message(), Code::Unavailable.description());
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        let retryable = [
            tonic::Status::unavailable("x"),
            tonic::Status::internal("x"),
            tonic::Status::unknown("x"),
            tonic::Status::deadline_exceeded("x"),
        ];
        for status in retryable {
            assert!(ClientError::from(status).is_retryable());
        }
        let fatal = [
            tonic::Status::not_found("x"),
            tonic::Status::invalid_argument("x"),
            tonic::Status::unauthenticated("x"),
            tonic::Status::permission_denied("x"),
            tonic::Status::failed_precondition("x"),
            tonic::Status::unimplemented("x"),
        ];
        for status in fatal {
            assert!(!ClientError::from(status).is_retryable());
        }
    }
}
