//! The Istio data plane: synthetic traffic split by VirtualService weights, and Istio's
//! metrics. (Being built.)

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::{Shutdown, World};

/// The mesh's traffic state and metrics.
#[derive(Debug)]
pub struct Mesh {
    request_rate: f64,
}

impl Mesh {
    /// A mesh sending `request_rate` requests per second per host.
    pub fn new(request_rate: f64) -> Self {
        Self { request_rate }
    }

    /// Overrides a Deployment's error rate.
    pub fn set_error_rate(&self, namespace: &str, deployment: &str, rate: Option<f64>) {
        let _ = (namespace, deployment, rate, self.request_rate);
    }
}

/// Sends traffic until `shutdown` is cancelled.
pub async fn run(world: Arc<World>, shutdown: Shutdown) {
    let _ = world;
    shutdown.cancelled().await;
}

/// Serves `/metrics` until `shutdown` is cancelled.
pub async fn serve_metrics(listener: TcpListener, world: Arc<World>, shutdown: Shutdown) {
    let _ = (listener, world);
    shutdown.cancelled().await;
}
