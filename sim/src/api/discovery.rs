//! Discovery and the server's other read-only endpoints: `/api`, `/apis` (legacy and
//! aggregated `apidiscovery.k8s.io/v2`), `/apis/GROUP[/VERSION]`, `/version`, health checks,
//! a minimal `/openapi/v2` that lets kubectl's client-side validation pass, and the
//! service-account issuer's OpenID discovery (`/.well-known/openid-configuration`,
//! `/openid/v1/jwks`).

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::{ApiState, Output, respond};
use crate::error::ApiError;
use crate::resources::Registry;

/// The Kubernetes version the simulator claims to be.
pub const GIT_VERSION: &str = "v1.33.0";

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|accept| accept.split(',').next())
        .is_some_and(|first| {
            first.contains("as=APIGroupDiscoveryList") && first.contains("g=apidiscovery.k8s.io")
        })
}

fn aggregated(body: &Value) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (StatusCode::OK, [(header::CONTENT_TYPE, AGGREGATED)], bytes).into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

fn text(body: &'static str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Answers a GET of a non-resource path.
pub(crate) fn handle(
    state: &ApiState,
    segments: &[&str],
    headers: &HeaderMap,
    output: Output,
) -> Response {
    let registry = &state.world.registry;
    // Discovery documents are JSON (or YAML) whatever else the client would take.
    let output = match output {
        Output::Table | Output::Protobuf { .. } => Output::Json,
        other => other,
    };
    let ok = |v: &Value| respond(StatusCode::OK, output, v);
    match segments {
        [] => ok(&json!({"paths": [
            "/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v2", "/readyz",
            "/version",
        ]})),
        ["healthz" | "livez" | "readyz", ..] => text("ok"),
        ["version"] => ok(&json!({
            "major": "1",
            "minor": "33",
            "gitVersion": GIT_VERSION,
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-04-23T00:00:00Z",
            "goVersion": "go1.24.2",
            "compiler": "gc",
            "platform": "linux/amd64",
        })),
        ["openapi", "v2"] => openapi_v2(headers),
        [".well-known", "openid-configuration"] => ok(&state.world.tokens.openid_configuration()),
        ["openid", "v1", "jwks"] => ok(&state.world.tokens.jwks()),
        ["openapi", "v3"] => ok(&json!({"paths": {}})),
        ["api"] if wants_aggregated(headers) => aggregated(&json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": [aggregated_group(registry, "")],
        })),
        ["api"] => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            ok(&json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": host},
                ],
            }))
        }
        ["api", "v1"] => ok(&resource_list(registry, "", "v1")),
        ["apis"] if wants_aggregated(headers) => {
            let items: Vec<Value> = registry
                .groups()
                .iter()
                .map(|g| aggregated_group(registry, g))
                .collect();
            aggregated(&json!({
                "kind": "APIGroupDiscoveryList",
                "apiVersion": "apidiscovery.k8s.io/v2",
                "metadata": {},
                "items": items,
            }))
        }
        ["apis"] => {
            let groups: Vec<Value> = registry
                .groups()
                .iter()
                .filter_map(|g| api_group(registry, g))
                .collect();
            ok(&json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", group] => match api_group(registry, group) {
            Some(mut g) => {
                g["kind"] = json!("APIGroup");
                g["apiVersion"] = json!("v1");
                ok(&g)
            }
            None => not_found(segments),
        },
        ["apis", group, version] if registry.group_versions(group).iter().any(|v| v == version) => {
            ok(&resource_list(registry, group, version))
        }
        _ => not_found(segments),
    }
}

fn not_found(segments: &[&str]) -> Response {
    ApiError::no_route(&format!("/{}", segments.join("/"))).into_response()
}

fn api_group(registry: &Registry, group: &str) -> Option<Value> {
    let versions = registry.group_versions(group);
    let preferred = versions.first()?;
    let gv = |v: &String| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    Some(json!({
        "name": group,
        "versions": versions.iter().map(gv).collect::<Vec<_>>(),
        "preferredVersion": gv(preferred),
    }))
}

fn resource_list(registry: &Registry, group: &str, version: &str) -> Value {
    let resources: Vec<Value> = registry
        .resources_of(group, version)
        .iter()
        .flat_map(|def| def.api_resources())
        .collect();
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

fn aggregated_group(registry: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = if group.is_empty() {
        vec!["v1".to_owned()]
    } else {
        registry.group_versions(group)
    }
    .iter()
    .map(|v| {
        let resources: Vec<Value> = registry
            .resources_of(group, v)
            .iter()
            .map(|def| def.aggregated_resource(v))
            .collect();
        json!({"version": v, "resources": resources, "freshness": "Current"})
    })
    .collect();
    json!({"metadata": {"name": group}, "versions": versions})
}

/// kubectl fetches the OpenAPI document (as protobuf) to validate `create -f` input. An empty
/// protobuf message is a valid, empty `openapi_v2.Document`: every kind is then unknown to the
/// validator, which skips validation for unknown kinds, so `create -f` works without
/// `--validate=false`. A JSON client gets an empty Swagger document.
fn openapi_v2(headers: &HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("protobuf") {
        return (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )],
            Vec::<u8>::new(),
        )
            .into_response();
    }
    respond(
        StatusCode::OK,
        Output::Json,
        &json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": GIT_VERSION},
            "paths": {},
            "definitions": {},
        }),
    )
}
