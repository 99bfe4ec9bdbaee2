//! Counts RolloutService calls by method and gRPC status code: a tower layer around the
//! service that takes the code from the response headers (a trailers-only answer, as every
//! error before a stream starts) or from the trailers once the body ends, so a stream is
//! counted when it ends.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::server::NamedService;

use super::Telemetry;

/// The RPCs of `steerer.v1.RolloutService`; a path naming another method is counted as
/// `other`, so callers cannot grow the label set.
const METHODS: [&str; 9] = [
    "StartRollout",
    "GetRollout",
    "ListRollouts",
    "WatchRollout",
    "AbortRollout",
    "PauseRollout",
    "ResumeRollout",
    "PromoteRollout",
    "GetServerInfo",
];

/// The `method` label of a request path (`/steerer.v1.RolloutService/GetRollout`).
pub fn method_label(path: &str) -> &'static str {
    let last = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|m| **m == last)
        .copied()
        .unwrap_or("other")
}

/// The name of a `grpc-status` value, as the gRPC specification spells the codes
/// (`OK`, `NOT_FOUND`, …); a value outside the specification is `UNKNOWN`.
pub fn code_name(value: &[u8]) -> &'static str {
    match value {
        b"0" => "OK",
        b"1" => "CANCELLED",
        b"2" => "UNKNOWN",
        b"3" => "INVALID_ARGUMENT",
        b"4" => "DEADLINE_EXCEEDED",
        b"5" => "NOT_FOUND",
        b"6" => "ALREADY_EXISTS",
        b"7" => "PERMISSION_DENIED",
        b"8" => "RESOURCE_EXHAUSTED",
        b"9" => "FAILED_PRECONDITION",
        b"10" => "ABORTED",
        b"11" => "OUT_OF_RANGE",
        b"12" => "UNIMPLEMENTED",
        b"13" => "INTERNAL",
        b"14" => "UNAVAILABLE",
        b"15" => "DATA_LOSS",
        b"16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

fn status_in(headers: &HeaderMap) -> Option<&'static str> {
    headers.get("grpc-status").map(|v| code_name(v.as_bytes()))
}

/// Counts every call of the service it wraps in `steerer_grpc_requests_total`.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    telemetry: Telemetry,
}

impl GrpcMetricsLayer {
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

/// A gRPC service whose calls are counted when they end.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    telemetry: Telemetry,
}

impl<S: NamedService> NamedService for GrpcMetrics<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call {
            method: method_label(request.uri().path()),
            telemetry: self.telemetry.clone(),
        };
        self.inner
            .call(request)
            .map(move |response| response.map(|r| call.follow(r)))
            .boxed()
    }
}

/// A call not counted yet.
struct Call {
    method: &'static str,
    telemetry: Telemetry,
}

impl Call {
    fn count(self, code: &'static str) {
        self.telemetry.count_grpc_call(self.method, code);
    }

    /// Counts a trailers-only answer now; otherwise hands the body a call to count when its
    /// trailers pass (or when it ends or is dropped without them).
    fn follow(
        self,
        response: http::Response<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        if let Some(code) = status_in(response.headers()) {
            self.count(code);
            return response;
        }
        if response.body().is_end_stream() {
            self.count("UNKNOWN");
            return response;
        }
        response.map(|inner| {
            tonic::body::Body::new(CountedBody {
                inner,
                call: Some(self),
            })
        })
    }
}

/// A response body that counts its call when the trailers pass: with their `grpc-status`, or
/// `UNKNOWN` when the body ends without one, or `CANCELLED` when it is dropped before its end
/// (the client went away).
struct CountedBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> CountedBody<B> {
    fn end(&mut self, code: &'static str) {
        if let Some(call) = self.call.take() {
            call.count(code);
        }
    }
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.end(status_in(trailers).unwrap_or("UNKNOWN"));
                }
            }
            Poll::Ready(Some(Err(_)) | None) => this.end("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        self.end("CANCELLED");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt;
    use tower::{Layer, Service, ServiceExt};

    /// A service answering by path: `Fail` trailers-only NOT_FOUND, `Stream` a body with OK
    /// trailers, `Cut` a body that never ends.
    fn service() -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone {
        tower::service_fn(|request: http::Request<()>| async move {
            let path = request.uri().path().to_owned();
            let response = if path.ends_with("/GetRollout") {
                tonic::Status::not_found("rollout x not found").into_http()
            } else if path.ends_with("/WatchRollout") {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                let frames = vec![
                    Ok::<_, tonic::Status>(Frame::data(bytes::Bytes::from_static(b"event"))),
                    Ok(Frame::trailers(trailers)),
                ];
                let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
                http::Response::new(tonic::body::Body::new(body))
            } else {
                let body = http_body_util::StreamBody::new(futures::stream::pending::<
                    Result<Frame<bytes::Bytes>, tonic::Status>,
                >());
                http::Response::new(tonic::body::Body::new(body))
            };
            Ok::<_, Infallible>(response)
        })
    }

    fn request(method: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(format!("/steerer.v1.RolloutService/{method}"))
            .body(())
            .unwrap()
    }

    fn lines(telemetry: &Telemetry) -> Vec<String> {
        telemetry
            .encode()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("steerer_grpc_requests_total{"))
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn calls_are_counted_from_the_headers_or_when_the_stream_ends() {
        let telemetry = Telemetry::default();
        let mut svc = GrpcMetricsLayer::new(telemetry.clone()).layer(service());

        let answer = svc
            .ready()
            .await
            .unwrap()
            .call(request("GetRollout"))
            .await
            .unwrap();
        assert!(answer.headers().contains_key("grpc-status"));
        assert_eq!(
            lines(&telemetry),
            ["steerer_grpc_requests_total{method=\"GetRollout\",code=\"NOT_FOUND\"} 1"]
        );

        let answer = svc
            .ready()
            .await
            .unwrap()
            .call(request("WatchRollout"))
            .await
            .unwrap();
        assert_eq!(
            lines(&telemetry).len(),
            1,
            "not counted before the stream ends"
        );
        let collected = answer.into_body().collect().await.unwrap();
        assert!(collected.trailers().is_some());
        assert!(lines(&telemetry).contains(
            &"steerer_grpc_requests_total{method=\"WatchRollout\",code=\"OK\"} 1".to_owned()
        ));

        let answer = svc
            .ready()
            .await
            .unwrap()
            .call(request("ListRollouts"))
            .await
            .unwrap();
        drop(answer);
        assert!(lines(&telemetry).contains(
            &"steerer_grpc_requests_total{method=\"ListRollouts\",code=\"CANCELLED\"} 1".to_owned()
        ));

        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(request("Nonsense"))
            .await
            .unwrap();
        assert!(
            lines(&telemetry)
                .iter()
                .any(|l| l.starts_with("steerer_grpc_requests_total{method=\"other\"")),
            "{:?}",
            lines(&telemetry)
        );
    }

    #[test]
    fn every_rpc_of_the_service_has_its_own_method_label() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(steerer::FILE_DESCRIPTOR_SET).unwrap();
        let service = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .find(|s| s.name() == "RolloutService")
            .unwrap();
        for method in &service.method {
            assert_eq!(
                method_label(&format!("/steerer.v1.RolloutService/{}", method.name())),
                method.name()
            );
        }
        assert_eq!(
            method_label("/steerer.v1.RolloutService/DropTables"),
            "other"
        );
    }

    #[test]
    fn codes_are_named_as_the_grpc_specification_spells_them() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"5"), "NOT_FOUND");
        assert_eq!(code_name(b"16"), "UNAUTHENTICATED");
        assert_eq!(code_name(b"99"), "UNKNOWN");
        assert_eq!(code_name(b""), "UNKNOWN");
    }
}
