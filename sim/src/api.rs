//! The Kubernetes REST API over HTTP: routing, verbs, watches, discovery and the admin
//! endpoints. (Being built.)

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::{Shutdown, World};

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, world: Arc<World>, shutdown: Shutdown) {
    let _ = (listener, world);
    shutdown.cancelled().await;
}
