//! Query parameters shared by reads and watches: `resourceVersion`, `labelSelector` and
//! `fieldSelector` (with the field selectors each resource supports).

use super::ResourceRequest;
use crate::error::ApiError;
use crate::resources::ResourceDef;
use crate::selector::{FieldSelector, LabelSelector};

/// Parses the `resourceVersion` query parameter: `None` when absent, empty or "0".
pub(crate) fn parse_rv_param(req: &ResourceRequest) -> Result<Option<u64>, ApiError> {
    match req.param("resourceVersion") {
        None | Some("") | Some("0") => Ok(None),
        Some(rv) => rv.parse::<u64>().map(Some).map_err(|e| {
            ApiError::bad_request(format!("resourceVersion: Invalid value: \"{rv}\": {e}"))
        }),
    }
}

/// The field selectors a resource supports besides `metadata.name` and `metadata.namespace`.
fn field_selectors(def: &ResourceDef) -> &'static [&'static str] {
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "events") => &["regarding.kind", "regarding.name", "reason", "type"],
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "status.phase",
            "status.podIP",
        ],
        ("", "namespaces") => &["status.phase"],
        ("", "secrets") => &["type"],
        _ => &[],
    }
}

/// The label and field selectors of a list or watch, with a named object's watch turned into a
/// `metadata.name` field selector.
pub(crate) fn selectors(req: &ResourceRequest) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(req.param("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut fields = FieldSelector::parse(
        req.param("fieldSelector").unwrap_or(""),
        field_selectors(&req.def),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(name) = &req.name {
        fields
            .terms
            .push(("metadata.name".into(), name.clone(), true));
    }
    Ok((labels, fields))
}
