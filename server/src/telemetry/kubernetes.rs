//! Counts the server's Kubernetes API requests by verb and answer, each in a `kubernetes`
//! span (debug level): a tower layer on the kube client's service stack, and the client
//! built with it.

use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use http::{Method, Request, Response, Uri};
use tracing::Instrument;

use super::{Telemetry, TelemetryError};

/// A Kubernetes client whose every request is counted in `steerer_kubernetes_requests_total`:
/// the default kube-rs stack for `config`, with [`KubeRequestsLayer`] outermost (a request the
/// client retries counts once, with its last answer).
pub fn kube_client(
    config: kube::Config,
    telemetry: &Telemetry,
) -> Result<kube::Client, TelemetryError> {
    let builder =
        kube::client::ClientBuilder::try_from(config).map_err(TelemetryError::KubeClient)?;
    Ok(builder
        .with_layer(&KubeRequestsLayer::new(telemetry.clone()))
        .build())
}

/// The verb of an API request, as the API server's audit log names it: `get`, `list`,
/// `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, else `other`.
pub fn verb(method: &Method, uri: &Uri) -> &'static str {
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match *method {
        Method::GET if watch => "watch",
        Method::GET if is_collection(uri.path()) => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if is_collection(uri.path()) => "deletecollection",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// Whether a resource path names a collection (`/api/v1/namespaces/ns/configmaps`) rather
/// than one object (`…/configmaps/name`, `…/configmaps/name/status`, `/api/v1/namespaces/ns`).
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    };
    let Some(mut rest) = rest else {
        return false;
    };
    if rest.len() >= 3 && rest[0] == "namespaces" {
        rest = &rest[2..];
    }
    rest.len() == 1
}

/// Counts every request of the service it wraps.
#[derive(Clone)]
pub struct KubeRequestsLayer {
    telemetry: Telemetry,
}

impl KubeRequestsLayer {
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
    }
}

impl<S> tower::Layer<S> for KubeRequestsLayer {
    type Service = KubeRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KubeRequests {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

/// A Kubernetes client service whose requests are counted when their answer's head arrives
/// (for a watch: when the stream starts), by verb and HTTP status, or `error` when none came.
#[derive(Clone)]
pub struct KubeRequests<S> {
    inner: S,
    telemetry: Telemetry,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for KubeRequests<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let verb = verb(request.method(), request.uri());
        let telemetry = self.telemetry.clone();
        // A child of the caller's span (a rollout's step): kube's client queue carries the
        // caller's span over to the task that sends the request.
        let span = tracing::debug_span!("kubernetes", verb, path = request.uri().path());
        span.in_scope(|| self.inner.call(request))
            .instrument(span)
            .map(move |result| {
                let code = match &result {
                    Ok(response) => response.status().as_u16().to_string(),
                    Err(_) => "error".to_owned(),
                };
                telemetry.count_kube_request(verb, code);
                result
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    fn verb_of(method: Method, uri: &str) -> &'static str {
        verb(&method, &uri.parse().unwrap())
    }

    #[test]
    fn verbs_follow_the_method_and_whether_the_path_is_a_collection_or_a_watch() {
        let cm = "/api/v1/namespaces/test/configmaps";
        assert_eq!(verb_of(Method::GET, cm), "list");
        assert_eq!(
            verb_of(Method::GET, &format!("{cm}?labelSelector=a%3Db")),
            "list"
        );
        assert_eq!(
            verb_of(Method::GET, &format!("{cm}?watch=true&resourceVersion=1")),
            "watch"
        );
        assert_eq!(verb_of(Method::GET, &format!("{cm}/one")), "get");
        assert_eq!(verb_of(Method::POST, cm), "create");
        assert_eq!(verb_of(Method::PUT, &format!("{cm}/one")), "update");
        assert_eq!(verb_of(Method::DELETE, &format!("{cm}/one")), "delete");
        assert_eq!(verb_of(Method::DELETE, cm), "deletecollection");
        let vs = "/apis/networking.istio.io/v1/namespaces/test/virtualservices";
        assert_eq!(verb_of(Method::PATCH, &format!("{vs}/podinfo")), "patch");
        assert_eq!(verb_of(Method::GET, vs), "list");
        assert_eq!(
            verb_of(Method::GET, "/apis/apps/v1/deployments?watch=1"),
            "watch"
        );
        assert_eq!(verb_of(Method::GET, "/apis/apps/v1/deployments"), "list");
        assert_eq!(
            verb_of(
                Method::GET,
                "/apis/apps/v1/namespaces/test/deployments/a/status"
            ),
            "get"
        );
        assert_eq!(verb_of(Method::GET, "/api/v1/namespaces"), "list");
        assert_eq!(verb_of(Method::GET, "/api/v1/namespaces/test"), "get");
        assert_eq!(verb_of(Method::GET, "/version"), "get");
        assert_eq!(verb_of(Method::HEAD, cm), "other");
    }

    #[tokio::test]
    async fn every_request_is_counted_with_its_status_or_as_an_error() {
        let telemetry = Telemetry::default();
        let inner = tower::service_fn(|request: Request<()>| async move {
            if request.uri().path().ends_with("/broken") {
                return Err("connection refused");
            }
            let status = if request.uri().path().ends_with("/missing") {
                404
            } else {
                200
            };
            Ok::<_, &str>(Response::builder().status(status).body(()).unwrap())
        });
        let mut service = KubeRequestsLayer::new(telemetry.clone()).layer(inner);
        for (method, path) in [
            (Method::GET, "/api/v1/namespaces/test/configmaps"),
            (Method::GET, "/api/v1/namespaces/test/configmaps?watch=true"),
            (Method::GET, "/api/v1/namespaces/test/configmaps/missing"),
            (Method::PATCH, "/api/v1/namespaces/test/configmaps/a"),
            (Method::PATCH, "/api/v1/namespaces/test/configmaps/broken"),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            let _ = service.ready().await.unwrap().call(request).await;
        }
        let text = telemetry.encode().unwrap();
        for line in [
            "steerer_kubernetes_requests_total{verb=\"list\",code=\"200\"} 1",
            "steerer_kubernetes_requests_total{verb=\"watch\",code=\"200\"} 1",
            "steerer_kubernetes_requests_total{verb=\"get\",code=\"404\"} 1",
            "steerer_kubernetes_requests_total{verb=\"patch\",code=\"200\"} 1",
            "steerer_kubernetes_requests_total{verb=\"patch\",code=\"error\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn a_request_runs_in_a_kubernetes_span_inside_the_callers_span() {
        use crate::telemetry::logs::capture::{Captured, json};
        let captured = Captured::default();
        let _logs = tracing::subscriber::set_default(json(
            &captured,
            tracing::level_filters::LevelFilter::DEBUG,
        ));
        let inner = tower::service_fn(|_: Request<()>| async move {
            tracing::debug!("sending");
            Ok::<_, &str>(Response::builder().status(200).body(()).unwrap())
        });
        let mut service = KubeRequestsLayer::new(Telemetry::default()).layer(inner);
        let request = Request::builder()
            .method(Method::PATCH)
            .uri("/apis/networking.istio.io/v1/namespaces/test/virtualservices/podinfo")
            .body(())
            .unwrap();
        // As kube's client queue does: the request is handed to the service in the
        // caller's span.
        async { service.ready().await.unwrap().call(request).await }
            .instrument(tracing::info_span!("step", sequence = 4))
            .await
            .unwrap();
        let lines = captured.lines();
        let sent = lines
            .iter()
            .find(|l| l["fields"]["message"] == "sending")
            .expect("the inner service's line");
        let spans = sent["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2, "{sent}");
        assert_eq!(spans[0]["name"], "step");
        assert_eq!(spans[1]["name"], "kubernetes");
        assert_eq!(spans[1]["verb"], "patch");
        assert_eq!(
            spans[1]["path"],
            "/apis/networking.istio.io/v1/namespaces/test/virtualservices/podinfo"
        );
    }

    #[test]
    fn the_client_builds_from_a_config_with_the_layer() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let telemetry = Telemetry::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = kube_client(config, &telemetry).unwrap();
            let _ = client.apiserver_version().await;
        });
        let text = telemetry.encode().unwrap();
        assert!(
            text.contains("steerer_kubernetes_requests_total{verb=\"get\",code=\"error\"} 1"),
            "{text}"
        );
    }
}
