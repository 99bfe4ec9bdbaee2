//! Exit codes and the CLI's error type: how every failure reads and which code it exits with.

use steerer_client::ClientError;
use steerer_client::proto::Phase;

/// The documented exit codes (see `steerer --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The rollout was promoted, or the command succeeded.
    Success = 0,
    /// The rollout ended rolled back, aborted or failed, or the server refused the operation.
    Failed = 1,
    /// Invalid usage or `INVALID_ARGUMENT`.
    Usage = 2,
    /// The server is unreachable or `UNAVAILABLE`.
    Unreachable = 3,
    /// `NOT_FOUND`, `UNAUTHENTICATED` or `PERMISSION_DENIED`.
    Denied = 4,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit code of a followed rollout that ended in `phase`.
    pub fn for_phase(phase: Phase) -> Self {
        if phase == Phase::Succeeded {
            Self::Success
        } else {
            Self::Failed
        }
    }
}

/// A failure of a CLI command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input caught before calling the server.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached (or timed out); names the address tried.
    #[error("cannot reach the steerer server at {endpoint}: {source}")]
    Unreachable {
        endpoint: String,
        source: ClientError,
    },
    /// What the server (or the SDK) said.
    #[error(transparent)]
    Client(ClientError),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// Wraps an SDK error, naming the server address when it is about reaching it.
    pub fn from_client(err: ClientError, endpoint: &str) -> Self {
        match exit_for(&err) {
            Exit::Unreachable => Self::Unreachable {
                endpoint: endpoint.to_string(),
                source: err,
            },
            _ => Self::Client(err),
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            Self::Usage(_) => Exit::Usage,
            Self::Unreachable { .. } => Exit::Unreachable,
            Self::Client(err) => exit_for(err),
            Self::Output(_) => Exit::Failed,
        }
    }

    /// The gRPC code name for JSON output (`NOT_FOUND`), or a local category.
    pub fn code_name(&self) -> &'static str {
        match self {
            Self::Usage(_) => "USAGE",
            Self::Unreachable { source, .. } | Self::Client(source) => match source {
                ClientError::Transport { .. } => "UNAVAILABLE",
                ClientError::Config { .. } => "USAGE",
                ClientError::Auth { .. } => "UNAUTHENTICATED",
                other => steerer_client::code_name(other.code()),
            },
            Self::Output(_) => "OUTPUT",
        }
    }
}

/// The exit code for an SDK error.
pub fn exit_for(err: &ClientError) -> Exit {
    match err {
        ClientError::InvalidArgument { .. } | ClientError::Config { .. } => Exit::Usage,
        ClientError::Unavailable { .. }
        | ClientError::Transport { .. }
        | ClientError::DeadlineExceeded { .. } => Exit::Unreachable,
        ClientError::NotFound { .. }
        | ClientError::Unauthenticated { .. }
        | ClientError::PermissionDenied { .. }
        | ClientError::Auth { .. } => Exit::Denied,
        _ => Exit::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    fn exit_of(status: Status) -> u8 {
        CliError::from_client(status.into(), "http://x")
            .exit()
            .code()
    }

    #[test]
    fn server_statuses_map_to_the_documented_exit_codes() {
        assert_eq!(exit_of(Status::invalid_argument("bad weight")), 2);
        assert_eq!(exit_of(Status::unavailable("restarting")), 3);
        assert_eq!(exit_of(Status::deadline_exceeded("slow")), 3);
        assert_eq!(exit_of(Status::not_found("no such rollout")), 4);
        assert_eq!(exit_of(Status::unauthenticated("no token")), 4);
        assert_eq!(exit_of(Status::permission_denied("read-only token")), 4);
        assert_eq!(exit_of(Status::already_exists("r-1 is active")), 1);
        assert_eq!(exit_of(Status::failed_precondition("not paused")), 1);
        assert_eq!(exit_of(Status::internal("bug")), 1);
    }

    #[test]
    fn only_a_promoted_rollout_exits_zero() {
        assert_eq!(Exit::for_phase(Phase::Succeeded), Exit::Success);
        for phase in [Phase::RolledBack, Phase::Aborted, Phase::Failed] {
            assert_eq!(Exit::for_phase(phase), Exit::Failed);
        }
    }

    #[test]
    fn an_unreachable_server_is_named_in_the_message() {
        let err = CliError::from_client(
            Status::unavailable("tcp connect error").into(),
            "http://127.0.0.1:50051",
        );
        assert_eq!(
            err.to_string(),
            "cannot reach the steerer server at http://127.0.0.1:50051: \
             server unavailable: tcp connect error"
        );
        assert_eq!(err.code_name(), "UNAVAILABLE");
    }

    #[test]
    fn not_found_reads_as_the_server_sentence() {
        let err = CliError::from_client(
            Status::not_found("rollout \"abc\" not found").into(),
            "http://x",
        );
        assert_eq!(err.to_string(), "rollout \"abc\" not found");
        assert_eq!(err.code_name(), "NOT_FOUND");
    }
}
