//! Which Kubernetes API failures are worth retrying. A 5xx, a 429 or a 409 goes away by
//! itself (or after a fresh read); a 403, a 404 or a 422 does not, so a step that got one is
//! not retried as if it were transient: the engine ends the rollout and says why.

/// The HTTP status of a failed Kubernetes API call, when the API server answered one.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Whether an API answer with this status will be the same however often the request is
/// repeated: bad requests, missing permission, missing objects, methods or media types the
/// server does not take, and objects that fail validation (422; a failed JSON-patch `test`
/// also answers 422, and callers that read afresh before each attempt retry it themselves).
pub fn is_permanent(code: u16) -> bool {
    matches!(code, 400 | 401 | 403 | 404 | 405 | 406 | 413 | 415 | 422)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_permanent_and_server_errors_conflicts_and_throttling_are_not() {
        for code in [400, 401, 403, 404, 405, 422] {
            assert!(is_permanent(code), "{code}");
        }
        for code in [408, 409, 410, 429, 500, 502, 503, 504] {
            assert!(!is_permanent(code), "{code}");
        }
    }
}
