//! One structured audit line per mutating call (start, abort, pause, resume, promote): who
//! called, which RPC, the namespace and target, the rollout id and the outcome. Lines go to
//! the log (target `steerer::audit`) and, with `--audit-log PATH`, are appended to that file
//! as JSON lines.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// One audited call.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub time: chrono::DateTime<chrono::Utc>,
    pub caller: String,
    pub rpc: &'static str,
    pub namespace: String,
    pub target: String,
    pub rollout: String,
    /// The gRPC code of the answer (`OK`, `PERMISSION_DENIED`, …).
    pub outcome: String,
    /// The refusal's message, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Where audit lines go.
#[derive(Default)]
pub struct Audit {
    file: Option<Mutex<std::fs::File>>,
}

impl Audit {
    /// Logs only, or also appends to `path`.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        Ok(Self { file })
    }

    /// Records one call.
    pub fn record(&self, entry: &Entry) {
        tracing::info!(
            target: "steerer::audit",
            caller = %entry.caller,
            rpc = entry.rpc,
            namespace = %entry.namespace,
            target_deployment = %entry.target,
            rollout = %entry.rollout,
            outcome = %entry.outcome,
            "{}",
            if entry.message.is_empty() { "audit" } else { entry.message.as_str() }
        );
        let Some(file) = &self.file else { return };
        let Ok(mut line) = serde_json::to_string(entry) else {
            return;
        };
        line.push('\n');
        if let Ok(mut file) = file.lock()
            && let Err(error) = file.write_all(line.as_bytes())
        {
            tracing::error!(%error, "could not write the audit log");
        }
    }
}

/// The name of a gRPC code as the gRPC spec spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
