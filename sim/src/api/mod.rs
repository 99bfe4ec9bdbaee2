//! The Kubernetes REST API over HTTP: path routing, content negotiation, fault injection and
//! dispatch to discovery, the object verbs, watches and the admin endpoints under `/sim`.
//!
//! Paths follow kube-apiserver: `/api/v1/...` for the core group, `/apis/GROUP/VERSION/...`
//! for the others, `namespaces/NS/` before namespaced resources, `/status` and `/scale`
//! subresources, and the legacy `/watch/` prefix. Every failure is a `Status` object with the
//! code and reason the real server uses.

pub(crate) mod admin;
mod discovery;
pub mod encode;
pub(crate) mod objects;
mod params;
mod proto;
pub(crate) mod reviews;
mod table;
mod watch;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use http::{HeaderMap, Method, StatusCode, header};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::faults::{ClientId, Verb};
use crate::managed::{self, Operation, Writer};
use crate::resources::ResourceDef;
use crate::store::GroupResource;
use tokio_util::sync::CancellationToken as Shutdown;

use crate::world::World;

pub use objects::create_object;

/// Largest request body accepted, as kube-apiserver's 3 MiB limit.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// What the handlers share.
pub(crate) struct ApiState {
    pub world: Arc<World>,
    pub shutdown: Shutdown,
}

/// Serves the API on `listener` until `shutdown` is cancelled. Open watches end on shutdown.
pub async fn serve(listener: TcpListener, world: Arc<World>, shutdown: Shutdown) {
    let state = Arc::new(ApiState {
        world,
        shutdown: shutdown.clone(),
    });
    let app = Router::new().fallback(handle).with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "the API server stopped");
    }
}

async fn handle(State(state): State<Arc<ApiState>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // A bug in one handler must answer 500, not drop the client's connection.
    match AssertUnwindSafe(route(state, req)).catch_unwind().await {
        Ok(response) => {
            tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
            response
        }
        Err(_) => {
            tracing::error!(%method, %path, "handler panicked");
            ApiError::internal(format!("the server failed to serve {method} {path}"))
                .into_response()
        }
    }
}

/// How a response body is encoded, from the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Json,
    Yaml,
    /// A `meta.k8s.io/v1` Table (what `kubectl get` asks for).
    Table,
    /// Kubernetes' protobuf, what typed clients (kubectl's included) ask for first. Kinds
    /// without a protobuf form (custom resources) answer JSON when `or_json`, 406 otherwise.
    Protobuf {
        or_json: bool,
    },
}

fn negotiate(headers: &HeaderMap) -> Result<Output, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Ok(Output::Json);
    };
    let accept = accept.to_str().unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(Output::Json);
    }
    let ranges: Vec<&str> = accept.split(',').collect();
    for (i, range) in ranges.iter().enumerate() {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: HashMap<String, String> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        match media.as_str() {
            proto::MEDIA_TYPE if params.is_empty() => {
                let json_later = ranges[i + 1..].iter().any(|r| {
                    let media = r.split(';').next().unwrap_or("").trim();
                    matches!(media, "application/json" | "application/*" | "*/*")
                });
                return Ok(Output::Protobuf {
                    or_json: json_later,
                });
            }
            "application/json" | "application/*" | "*/*" => {
                match params.get("as").map(String::as_str) {
                    None => return Ok(Output::Json),
                    Some("Table")
                        if params.get("g").map(String::as_str) == Some("meta.k8s.io")
                            && matches!(
                                params.get("v").map(String::as_str),
                                Some("v1" | "v1beta1")
                            ) =>
                    {
                        return Ok(Output::Table);
                    }
                    Some(_) => {}
                }
            }
            "application/yaml" => return Ok(Output::Yaml),
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(accept))
}

/// A response body in the negotiated encoding.
pub(crate) fn respond(code: StatusCode, output: Output, value: &impl Serialize) -> Response {
    if let Output::Protobuf { or_json } = output {
        let encoded = serde_json::to_value(value)
            .map_err(|e| proto::ProtoError::Encode {
                path: "the answer".into(),
                why: e.to_string(),
            })
            .map(|value| proto::encode(&value));
        match encoded {
            Ok(Some(Ok(bytes))) => {
                return (code, [(header::CONTENT_TYPE, proto::MEDIA_TYPE)], bytes).into_response();
            }
            // A value the protobuf message cannot hold still reaches a client that reads JSON.
            Ok(Some(Err(e))) | Err(e) if or_json => {
                tracing::warn!(error = %e, "answering JSON instead of protobuf");
            }
            Ok(Some(Err(e))) | Err(e) => {
                return ApiError::internal(format!("encoding protobuf: {e}")).into_response();
            }
            Ok(None) if or_json => {}
            Ok(None) => return ApiError::not_acceptable(proto::MEDIA_TYPE).into_response(),
        }
    }
    if output == Output::Yaml {
        return match serde_yaml::to_string(value) {
            Ok(text) => (code, [(header::CONTENT_TYPE, "application/yaml")], text).into_response(),
            Err(e) => ApiError::internal(format!("encoding YAML: {e}")).into_response(),
        };
    }
    match serde_json::to_vec(value) {
        Ok(bytes) => (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::internal(format!("encoding JSON: {e}")).into_response(),
    }
}

/// A request for a resource, parsed from its path, query and headers.
pub(crate) struct ResourceRequest {
    pub def: Arc<ResourceDef>,
    pub version: String,
    pub api_version: String,
    /// Namespace from the path (`None` for cluster-scoped resources and all-namespace lists).
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `status` or `scale`.
    pub sub: Option<String>,
    pub verb: Verb,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    /// Who sent it (for faults that hold one client).
    pub client: ClientId,
    pub body: Bytes,
    pub output: Output,
}

impl ResourceRequest {
    pub fn gr(&self) -> GroupResource {
        self.def.group_resource()
    }

    /// The namespace key of the object (empty for cluster-scoped).
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The resource as counted and matched by faults: `deployments` or `deployments/scale`.
    pub fn counted_resource(&self) -> String {
        match &self.sub {
            Some(sub) => format!("{}/{sub}", self.def.plural),
            None => self.def.plural.clone(),
        }
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    pub fn dry_run(&self) -> bool {
        self.param("dryRun") == Some("All")
    }

    /// The field manager of a write and how it writes, for `managedFields`.
    pub fn writer(&self, operation: Operation) -> Writer {
        let user_agent = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        Writer {
            manager: managed::manager_name(self.param("fieldManager"), user_agent),
            operation,
            api_version: self.api_version.clone(),
            subresource: self.sub.clone(),
            // As Go's strconv.ParseBool, which kube-apiserver parses `force` with.
            force: matches!(
                self.param("force"),
                Some("1" | "t" | "T" | "true" | "TRUE" | "True")
            ),
        }
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn route(state: Arc<ApiState>, req: Request) -> Response {
    let client = ClientId::from_headers(req.headers());
    let admin = req.uri().path().split('/').find(|s| !s.is_empty()) == Some("sim");
    if admin {
        return route_request(state, req, client).await;
    }
    let world = Arc::clone(&state.world);
    // A held client's request reaches the server only when its hold ends; the answer to one
    // that got through before the hold reaches it only then too.
    world.faults.wait_client(&client).await;
    let response = route_request(state, req, client.clone()).await;
    world.faults.wait_client(&client).await;
    response
}

async fn route_request(state: Arc<ApiState>, req: Request, client: ClientId) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.first() == Some(&"sim") {
        let body = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(body) => body,
            Err(_) => return ApiError::too_large(MAX_BODY).into_response(),
        };
        return admin::handle(&state, &parts.method, &segments[1..], &body).await;
    }
    state.world.faults.wait_hold().await;
    let query = match Query::<HashMap<String, String>>::try_from_uri(&parts.uri) {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request(format!("invalid query: {e}")).into_response(),
    };
    let output = negotiate(&parts.headers);
    match segments.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => {}
        ["apis", _, _, rest @ ..] if !rest.is_empty() => {}
        _ => {
            if parts.method != Method::GET {
                return ApiError::method_not_supported(
                    &GroupResource::new("", &path),
                    parts.method.as_str(),
                )
                .into_response();
            }
            // Discovery answers JSON to any Accept; /openapi/v2 answers protobuf too.
            return discovery::handle(
                &state,
                &segments,
                &parts.headers,
                output.unwrap_or(Output::Json),
            );
        }
    }
    let output = match output {
        Ok(output) => output,
        Err(e) => return e.into_response(),
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return ApiError::too_large(MAX_BODY).into_response(),
    };
    let req = match parse_resource_request(
        &state.world,
        &parts.method,
        &segments,
        query,
        parts.headers,
        client,
        body,
        output,
        &path,
    ) {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    let faults = &state.world.faults;
    faults.record(req.verb, &req.counted_resource());
    if let Err(e) = faults
        .before_request(req.verb, &req.counted_resource(), &req.client)
        .await
    {
        return e.into_response();
    }
    match objects::dispatch(&state, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

#[allow(clippy::too_many_arguments)]
fn parse_resource_request(
    world: &World,
    method: &Method,
    segments: &[&str],
    query: HashMap<String, String>,
    headers: HeaderMap,
    client: ClientId,
    body: Bytes,
    output: Output,
    path: &str,
) -> Result<ResourceRequest, ApiError> {
    let (group, version, mut rest) = match segments {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let mut legacy_watch = false;
    if rest.first() == Some(&"watch") {
        legacy_watch = true;
        rest = &rest[1..];
    }
    let mut namespace = None;
    if rest.len() >= 3 && rest[0] == "namespaces" && !matches!(rest[2], "status" | "finalize") {
        namespace = Some(rest[1].to_owned());
        rest = &rest[2..];
    }
    let (resource, name, sub) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some((*name).to_owned()), None),
        [resource, name, sub] => (*resource, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return Err(ApiError::no_route(path)),
    };
    let def = world
        .registry
        .lookup(group, version, resource)
        .ok_or_else(|| ApiError::no_route(path))?;
    if def.namespaced == namespace.is_none() && (name.is_some() || !def.namespaced) {
        // A namespaced object outside a namespace, or a cluster-scoped one inside one.
        return Err(ApiError::no_route(path));
    }
    if let Some(sub) = &sub {
        let served = (sub == "status" && def.status)
            || (sub == "scale" && def.scale)
            || (sub == "token" && def.token);
        if !served {
            return Err(ApiError::no_route(path));
        }
    }
    // Reviews and TokenRequests are only ever created.
    if def.review && name.is_some() {
        return Err(ApiError::no_route(path));
    }
    if (def.review || sub.as_deref() == Some("token")) && method != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let watch_param = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let gr = def.group_resource();
    let verb = match (method, name.is_some()) {
        (&Method::GET, _) if legacy_watch || watch_param => Verb::Watch,
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) => Verb::Create,
        (&Method::POST, true) if sub.as_deref() == Some("token") => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) if sub.is_none() => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        (m, _) => return Err(ApiError::method_not_supported(&gr, m.as_str())),
    };
    if verb == Verb::Watch && sub.is_some() {
        return Err(ApiError::method_not_supported(&gr, "watch"));
    }
    Ok(ResourceRequest {
        api_version: def.api_version(version),
        version: version.to_owned(),
        def,
        namespace,
        name,
        sub,
        verb,
        query,
        headers,
        client,
        body,
        output,
    })
}

/// A streaming response body (watches).
pub(crate) fn stream_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(value: &str) -> Result<Output, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        negotiate(&headers)
    }

    #[test]
    fn accept_header_picks_table_json_or_refuses() {
        assert_eq!(
            accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json").unwrap(),
            Output::Table
        );
        assert_eq!(accept("application/json, */*").unwrap(), Output::Json);
        assert_eq!(
            accept("application/vnd.kubernetes.protobuf,application/json").unwrap(),
            Output::Protobuf { or_json: true }
        );
        assert_eq!(
            accept("application/vnd.kubernetes.protobuf").unwrap(),
            Output::Protobuf { or_json: false }
        );
        assert_eq!(
            accept("application/json, application/vnd.kubernetes.protobuf").unwrap(),
            Output::Json
        );
        assert_eq!(accept("application/yaml").unwrap(), Output::Yaml);
        assert_eq!(accept("text/html").unwrap_err().code, 406);
        assert_eq!(negotiate(&HeaderMap::new()).unwrap(), Output::Json);
    }
}
