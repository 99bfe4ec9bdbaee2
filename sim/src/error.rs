//! The simulator's errors: API errors as Kubernetes `Status` objects (the codes, reasons and
//! messages the real API server answers with), and `SimError` for starting and driving it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::resources::GroupResource;

/// A failed API request, rendered as a `Status` object with its HTTP code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code (404, 409, ...).
    pub code: u16,
    /// The `reason` field (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// A sentence for a person, worded as kube-apiserver words it.
    pub message: String,
    /// The `details` field, when the error names an object.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, gr: &GroupResource, name: &str) -> Self {
        let mut details = json!({ "name": name, "kind": gr.resource });
        if !gr.group.is_empty() {
            details["group"] = json!(gr.group);
        }
        self.details = Some(details);
        self
    }

    /// 404 NotFound for a named object.
    pub fn not_found(gr: &GroupResource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{gr} \"{name}\" not found")).with_details(gr, name)
    }

    /// 404 NotFound for a path that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409 AlreadyExists on create.
    pub fn already_exists(gr: &GroupResource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{gr} \"{name}\" already exists"),
        )
        .with_details(gr, name)
    }

    /// 409 Conflict: a stale resourceVersion (or a failed precondition).
    pub fn conflict(gr: &GroupResource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {gr} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
        .with_details(gr, name)
    }

    /// 422 Invalid: the object fails validation.
    pub fn invalid(gr: &GroupResource, name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(422, "Invalid", format!("{gr} \"{name}\" is invalid: {why}"))
            .with_details(gr, name)
    }

    /// 400 BadRequest: a malformed body, query or patch.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405 MethodNotSupported: a verb the resource does not serve.
    pub fn method_not_supported(gr: &GroupResource, verb: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{gr}\""),
        )
    }

    /// 410 Gone with reason Expired: a watch or list from a compacted resourceVersion.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 415 UnsupportedMediaType: a patch or body content type the server does not take.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    /// 500 InternalError (also used by fault injection).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 429 TooManyRequests (fault injection: API priority and fairness throttling).
    pub fn too_many_requests() -> Self {
        Self::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        )
    }

    /// 406 NotAcceptable: the `Accept` header names nothing the server can produce.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/json;as=Table;v=v1;g=meta.k8s.io (got {accept:?})"
            ),
        )
    }

    /// 415 UnsupportedMediaType for a patch type the resource does not take (strategic merge
    /// on a custom resource), with the list kube-apiserver gives for custom resources.
    pub fn unsupported_patch_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    /// 413 RequestEntityTooLarge: a body over the 3 MiB limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 422 Invalid without an object: a patch that does not apply (json-patch `test` failed,
    /// unknown operation), as kube-apiserver reports it, the cause in `details.causes`.
    pub fn patch_failed(cause: impl Into<String>) -> Self {
        let cause = cause.into();
        let mut err = Self::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {cause}"),
        );
        err.details = Some(json!({
            "causes": [{"reason": "UnexpectedServerResponse", "message": cause}],
        }));
        err
    }

    /// 409 Conflict from server-side apply: the fields other managers own, one cause each
    /// (`FieldManagerConflict`, the field and the manager), as kube-apiserver reports them.
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        let mut err = Self::new(409, "Conflict", message);
        err.details = Some(json!({ "causes": causes }));
        err
    }

    /// 405 MethodNotAllowed for a verb a resource does not serve at all (a review asked to
    /// list), in kube-apiserver's words.
    pub fn method_not_allowed() -> Self {
        let mut err = Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
        err.details = Some(json!({}));
        err
    }

    /// 401 Unauthorized: a request whose credentials do not authenticate.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 422 Invalid naming a kind (`TokenRequest.authentication.k8s.io`), as kube-apiserver's
    /// `NewInvalid` words it: one cause per field error, the name and kind in `details` when
    /// not empty.
    pub fn invalid_kind(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified = format!("{kind}.{group}");
        let summary = match errors {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut err = Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {summary}"),
        );
        let mut details = json!({"group": group});
        if !name.is_empty() {
            details["name"] = json!(name);
        }
        if !kind.is_empty() {
            details["kind"] = json!(kind);
        }
        details["causes"] = errors
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.detail, "field": e.field}))
            .collect();
        err.details = Some(details);
        err
    }

    /// 409 Conflict on a kind (`TokenRequest.authentication.k8s.io`) for a reason of its own.
    pub fn conflict_because(kind: &str, group: &str, name: &str, why: &str) -> Self {
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let mut err = Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
        );
        let mut details = json!({"name": name, "kind": kind});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        err.details = Some(details);
        err
    }

    /// The `Status` object the API server sends for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// One invalid field of an object, as kube-apiserver's `field.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: &'static str,
    /// The field path (`spec.expirationSeconds`).
    pub field: String,
    /// `Invalid value: 60: may not specify a duration less than 10 minutes`.
    pub detail: String,
}

impl FieldError {
    /// An invalid value: `value` is already rendered as Go renders it (`60`, `"x"`, `null`).
    pub fn invalid(field: &str, value: &str, why: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.to_owned(),
            detail: format!("Invalid value: {value}: {why}"),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let code = http::StatusCode::from_u16(self.code)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.to_status().to_string();
        (
            code,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_names_the_resource_and_group() {
        let gr = GroupResource::new("apps", "deployments");
        let status = ApiError::not_found(&gr, "web").to_status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["message"], "deployments.apps \"web\" not found");
        assert_eq!(status["details"]["group"], "apps");
    }
}

/// Errors starting or driving the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A listener could not be bound.
    #[error("failed to bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A manifest given with `--apply` could not be read or created.
    #[error("failed to apply {path}: {message}")]
    Apply {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The kubeconfig could not be built or written.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The service-account signing key could not be made.
    #[error("service-account tokens: {0}")]
    Tokens(#[from] crate::auth::tokens::TokenError),
    /// Any other I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
