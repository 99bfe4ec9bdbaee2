//! The `/metrics` endpoint: a small HTTP server answering `GET /metrics` with the registry in
//! the OpenMetrics text format, started by `serve` and stopped with it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Telemetry, TelemetryError};

/// The content type of the answer: what `prometheus-client` encodes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long stopping waits for scrapes under way.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running `/metrics` server. Dropping it stops the server too.
pub struct MetricsEndpoint {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Binds `addr` (port 0 picks a free port) and serves `telemetry` there. The bound address
    /// is logged and recorded in [`Telemetry::metrics_addr`].
    pub async fn start(addr: SocketAddr, telemetry: Telemetry) -> Result<Self, TelemetryError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .route("/metrics", get(scrape))
            .with_state(telemetry.clone());
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%error, "metrics server failed");
            }
        });
        telemetry.set_metrics_addr(Some(bound));
        tracing::info!(addr = %bound, "serving metrics on /metrics");
        Ok(Self {
            addr: bound,
            stop,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets scrapes under way finish (for a short while) and returns.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && tokio::time::timeout(STOP_GRACE, task).await.is_err()
        {
            tracing::warn!("metrics server did not stop in time");
        }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn scrape(State(telemetry): State<Telemetry>) -> Response {
    match telemetry.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode the metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn serves_the_registry_on_get_metrics_and_stops() {
        let telemetry = Telemetry::default();
        telemetry.set_leader(true);
        let endpoint = MetricsEndpoint::start("127.0.0.1:0".parse().unwrap(), telemetry.clone())
            .await
            .unwrap();
        let addr = endpoint.addr();
        assert_eq!(telemetry.metrics_addr(), Some(addr));
        let http = reqwest::Client::new();
        let answer = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["content-type"], CONTENT_TYPE);
        let text = answer.text().await.unwrap();
        assert!(text.lines().any(|l| l == "steerer_leader 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));

        let other = http.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(other.status(), 404);
        let post = http
            .post(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 405);

        endpoint.stop().await;
        assert!(
            reqwest::Client::new()
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .is_err(),
            "stopped"
        );
    }
}
