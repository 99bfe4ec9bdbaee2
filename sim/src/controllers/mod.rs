//! The simulated controllers: Deployments and HorizontalPodAutoscalers. (Being built.)

use std::sync::Arc;

use crate::{Shutdown, World};

/// Load figures HPAs follow, per HPA.
#[derive(Debug, Default)]
pub struct Loads {}

impl Loads {
    /// Sets the load figure of an HPA.
    pub fn set(&self, namespace: &str, hpa: &str, load: f64) {
        let _ = (namespace, hpa, load);
    }
}

/// Runs every controller until `shutdown` is cancelled.
pub async fn run(world: Arc<World>, shutdown: Shutdown) {
    let _ = world;
    shutdown.cancelled().await;
}
