//! The simulated controllers of kube-controller-manager: Deployments (with their ReplicaSets
//! and simulated pods), HorizontalPodAutoscalers and the namespaces' `default`
//! ServiceAccounts, acting directly on the store.

pub mod deployment;
pub mod hpa;
pub mod serviceaccounts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken as Shutdown;

use crate::store::{Change, Store};

pub use deployment::pod_template_hash;

/// Load figures HPAs follow, per HPA: 1.0 means the pods run exactly at the HPA's target
/// utilisation, 2.0 twice as busy, 0.5 half. HPAs without a figure see 1.0.
#[derive(Debug, Default)]
pub struct Loads {
    inner: Mutex<HashMap<(String, String), f64>>,
}

impl Loads {
    /// Sets the load figure of an HPA.
    pub fn set(&self, namespace: &str, hpa: &str, load: f64) {
        let load = if load.is_finite() { load.max(0.0) } else { 1.0 };
        self.lock()
            .insert((namespace.to_owned(), hpa.to_owned()), load);
    }

    /// The load figure of an HPA (1.0 unless set).
    pub fn get(&self, namespace: &str, hpa: &str) -> f64 {
        self.lock()
            .get(&(namespace.to_owned(), hpa.to_owned()))
            .copied()
            .unwrap_or(1.0)
    }

    /// Every figure set so far, as `((namespace, hpa), load)`.
    pub fn entries(&self) -> Vec<((String, String), f64)> {
        self.lock()
            .iter()
            .map(|(key, load)| (key.clone(), *load))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), f64>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The simulated delays the controllers play.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// Time a new pod takes to become ready.
    pub pod_startup: Duration,
    /// Shortest spacing of the Deployment controller's timed passes.
    pub controller_tick: Duration,
    /// How often HPAs recompute their desired replicas.
    pub hpa_sync: Duration,
}

/// Runs every controller until `shutdown` is cancelled.
///
/// Deployments are reconciled when the store reports a change to them, and on a timer only
/// while one of them waits for a pod to become ready or for its progress deadline, so an idle
/// cluster of thousands of objects costs nothing between changes.
pub async fn run(store: Arc<Store>, loads: &Loads, timing: Intervals, shutdown: Shutdown) {
    let mut changes = store.subscribe();
    let mut deployments = deployment::Controller::new(Arc::clone(&store), timing.pod_startup);
    deployments.resync_all();
    serviceaccounts::resync_all(&store);
    let mut hpa_tick = tokio::time::interval(timing.hpa_sync);
    hpa_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_timed_pass = Instant::now();
    loop {
        deployments.reconcile_dirty(Instant::now());
        // Timed passes are spaced by at least one controller tick, so pods that become ready
        // at nearly the same instant are handled in one pass.
        let wake = deployments
            .next_wakeup()
            .map(|at| at.max(last_timed_pass + timing.controller_tick));
        tokio::select! {
            () = shutdown.cancelled() => break,
            received = changes.recv() => {
                let mut namespaces = Vec::new();
                let mut observe = |change: &Change| {
                    deployments.observe(change);
                    namespaces.extend(serviceaccounts::namespace_to_check(change));
                };
                let mut lagged = false;
                match received {
                    Ok(change) => observe(&change),
                    Err(RecvError::Lagged(_)) => lagged = true,
                    Err(RecvError::Closed) => break,
                }
                // Batch whatever else is already queued.
                loop {
                    match changes.try_recv() {
                        Ok(change) => observe(&change),
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                            lagged = true;
                        }
                        Err(_) => break,
                    }
                }
                if lagged {
                    deployments.resync_all();
                    serviceaccounts::resync_all(&store);
                }
                for namespace in namespaces {
                    serviceaccounts::ensure_default(&store, &namespace);
                }
            }
            () = sleep_until_opt(wake) => {
                last_timed_pass = Instant::now();
                deployments.wake_due(last_timed_pass);
            }
            _ = hpa_tick.tick() => {
                hpa::sync_all(&store, loads);
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
