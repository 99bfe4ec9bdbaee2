//! The supervisor owns every rollout: it starts rollouts (after checking the objects they
//! name), resumes unfinished ones from the store at start-up, routes commands to their
//! drivers, and answers reads from the drivers' published state.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::decide::{self, Command};
use super::driver::{Driver, Envelope, announce};
use super::{EngineConfig, EngineError, Ports, StartRequest};
use crate::domain::Rollout;
use crate::store::StoreError;

/// The id of the rollout a `request_id` starts: derived from the namespace and the key, so
/// a retried start whose first answer was lost lands on the rollout (and the stored object)
/// the first attempt created. Formatted as a UUID like random ids.
pub fn rollout_id_for_request(namespace: &str, request_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(b"steerer.dev/request-id\0");
    hash.update(namespace.as_bytes());
    hash.update(b"\0");
    hash.update(request_id.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// How far back a start looks for the target's request metrics: a workload that served no
/// request in this long is not reported by the mesh (or not scraped).
pub const METRICS_LOOKBACK: Duration = Duration::from_secs(3600);

struct Entry {
    view: watch::Receiver<Rollout>,
    commands: Option<mpsc::Sender<Envelope>>,
}

/// Owns the rollouts and their drivers.
pub struct Supervisor {
    ports: Ports,
    config: EngineConfig,
    entries: Mutex<HashMap<String, Entry>>,
    /// Serialises starts so two requests cannot both pass the one-active-rollout check.
    start_lock: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    drivers: Mutex<JoinSet<()>>,
}

impl Supervisor {
    /// A supervisor with no rollouts.
    pub fn new(ports: Ports, config: EngineConfig) -> Self {
        Self {
            ports,
            config,
            entries: Mutex::new(HashMap::new()),
            start_lock: tokio::sync::Mutex::new(()),
            shutdown: CancellationToken::new(),
            drivers: Mutex::new(JoinSet::new()),
        }
    }

    /// The engine settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The events hub.
    pub fn hub(&self) -> &crate::events::Hub {
        &self.ports.hub
    }

    /// Loads every stored rollout, publishes its events to the hub and resumes the
    /// unfinished ones.
    pub async fn restore(&self) -> Result<usize, EngineError> {
        let stored = self.ports.store.load().await?;
        let mut resumed = 0;
        for (rollout, events) in stored {
            self.ports.hub.register(&rollout.id);
            if let Err(error) = self.ports.hub.publish(&events) {
                tracing::error!(rollout = %rollout.id, %error, "stored event log has a gap");
            }
            if !rollout.phase.is_terminal() {
                resumed += 1;
                tracing::info!(rollout = %rollout.id, phase = rollout.phase.name(), weight = rollout.canary_weight, "resuming rollout");
            }
            self.spawn(rollout);
        }
        Ok(resumed)
    }

    fn spawn(&self, rollout: Rollout) {
        let (view_tx, view_rx) = watch::channel(rollout.clone());
        let terminal = rollout.phase.is_terminal();
        let commands = if terminal {
            None
        } else {
            let (tx, rx) = mpsc::channel(16);
            let driver = Driver::new(
                self.ports.clone(),
                self.config.clone(),
                rollout.clone(),
                view_tx,
                rx,
                self.shutdown.child_token(),
            );
            if let Ok(mut drivers) = self.drivers.lock() {
                drivers.spawn(driver.run());
            }
            Some(tx)
        };
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                rollout.id.clone(),
                Entry {
                    view: view_rx,
                    commands,
                },
            );
        }
    }

    fn snapshot(&self) -> Vec<Rollout> {
        self.entries
            .lock()
            .map(|e| e.values().map(|e| e.view.borrow().clone()).collect())
            .unwrap_or_default()
    }

    /// The active rollout of a target, if any.
    pub fn active_for(&self, namespace: &str, target: &str) -> Option<Rollout> {
        self.snapshot()
            .into_iter()
            .find(|r| r.namespace == namespace && r.target == target && !r.phase.is_terminal())
    }

    /// Every rollout of a target, newest first.
    pub fn history(&self, namespace: &str, target: &str) -> Vec<Rollout> {
        let mut all: Vec<Rollout> = self
            .snapshot()
            .into_iter()
            .filter(|r| r.namespace == namespace && r.target == target)
            .collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        all
    }

    /// One rollout.
    pub fn get(&self, id: &str) -> Result<Rollout, EngineError> {
        self.entries
            .lock()
            .ok()
            .and_then(|e| e.get(id).map(|e| e.view.borrow().clone()))
            .ok_or_else(|| EngineError::NotFound(format!("rollout {id} not found")))
    }

    /// Rollouts, newest first.
    pub fn list(&self, namespace: Option<&str>, active_only: bool) -> Vec<Rollout> {
        let mut all: Vec<Rollout> = self
            .snapshot()
            .into_iter()
            .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
            .filter(|r| !active_only || !r.phase.is_terminal())
            .collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        all
    }

    /// Starts a rollout after checking everything it names. A rejected request changes
    /// nothing.
    pub async fn start(&self, request: StartRequest) -> Result<Rollout, EngineError> {
        let _guard = self.start_lock.lock().await;
        // A request id is a key within its namespace (the rollout id derives from both), so
        // the same key in another namespace is another request.
        if !request.request_id.is_empty()
            && let Some(existing) = self
                .snapshot()
                .into_iter()
                .find(|r| r.namespace == request.namespace && r.request_id == request.request_id)
        {
            return Ok(existing);
        }
        let ns = &request.namespace;
        if let Some(active) = self.active_for(ns, &request.target) {
            return Err(EngineError::AlreadyActive(format!(
                "rollout {} is already active for deployment {ns}/{} ({})",
                active.id,
                request.target,
                active.phase.name()
            )));
        }
        let canary_name = if request.canary.is_empty() {
            format!("{}-canary", request.target)
        } else {
            request.canary.clone()
        };
        if canary_name == request.target {
            return Err(EngineError::InvalidRequest(
                "canary must differ from target".into(),
            ));
        }
        let w = &self.ports.workloads;
        if w.deployment(ns, &request.target).is_none() {
            return Err(EngineError::NotFound(format!(
                "deployment {ns}/{} not found",
                request.target
            )));
        }
        let canary = w.deployment(ns, &canary_name).ok_or_else(|| {
            EngineError::NotFound(format!("canary deployment {ns}/{canary_name} not found"))
        })?;
        let containers = canary.images();
        for container in request.images.keys() {
            if !containers.contains_key(container) {
                let known: Vec<&str> = containers.keys().map(String::as_str).collect();
                return Err(EngineError::Refused(format!(
                    "canary deployment {ns}/{canary_name} has no container named {container} (it has: {})",
                    known.join(", ")
                )));
            }
        }
        let vs = (!request.virtual_service.is_empty()).then_some(request.virtual_service.as_str());
        let resolved = self
            .ports
            .router
            .resolve(ns, vs, &request.target, &canary_name)
            .await?;
        self.preflight(ns, &request.target, &canary_name).await?;
        let (virtual_service, weight) = (resolved.name, resolved.canary_weight);

        let now = Utc::now();
        let id = if request.request_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            rollout_id_for_request(ns, &request.request_id)
        };
        let mut rollout = Rollout::new(
            id.clone(),
            ns.clone(),
            request.target.clone(),
            canary_name,
            virtual_service,
            request.analysis.clone(),
            now,
        );
        rollout.request_id = request.request_id.clone();
        rollout.images = request.images.clone();
        rollout.canary_replicas = request.canary_replicas;
        let (rollout, started) =
            decide::start(rollout, canary.revision(), weight, resolved.fingerprint).record(now);
        match self.ports.store.create(&rollout, &started).await {
            Ok(()) => {}
            // The same request_id started it before and the answer was lost on the way: the
            // retry gets that rollout, not a second one.
            Err(StoreError::AlreadyExists { .. }) => return self.adopt(ns, &id).await,
            Err(e) => return Err(e.into()),
        }
        self.ports.hub.register(&id);
        if let Err(error) = self.ports.hub.publish(&started) {
            tracing::error!(rollout = %id, %error, "event log out of order");
        }
        announce(&self.ports, &rollout, &started);
        self.spawn(rollout.clone());
        Ok(rollout)
    }

    /// Checks that the rollout's analysis can have data before anything changes: the metrics
    /// provider must answer, and must have request series for GA or the canary. A canary that
    /// never served has none (it gets traffic only at the first step), but GA serves all the
    /// traffic, so when neither has any the mesh does not report them or Prometheus does not
    /// scrape it, and every check would be "no data" until the progress deadline. A provider
    /// that has scraped nothing at all yet (just started) is not judged.
    async fn preflight(&self, ns: &str, target: &str, canary: &str) -> Result<(), EngineError> {
        let workloads = [target.to_owned(), canary.to_owned()];
        let coverage = self
            .ports
            .metrics
            .coverage(ns, &workloads, METRICS_LOOKBACK)
            .await
            .map_err(EngineError::MetricsUnreachable)?;
        if coverage.reported.is_empty() && coverage.scraping {
            return Err(EngineError::Refused(format!(
                "Prometheus has no istio_requests_total series (reporter=\"destination\") for deployment {ns}/{target} or its canary {ns}/{canary} in the last {}: the mesh does not report these workloads or Prometheus does not scrape it, so every check would have no data; nothing was changed",
                humantime::format_duration(METRICS_LOOKBACK)
            )));
        }
        Ok(())
    }

    /// Takes over a rollout found in the store (created by an earlier attempt of the same
    /// request whose answer was lost): its events go to the hub and its driver starts.
    async fn adopt(&self, namespace: &str, id: &str) -> Result<Rollout, EngineError> {
        let (rollout, events) = self.ports.store.get(namespace, id).await?.ok_or_else(|| {
            EngineError::Interrupted(format!(
                "rollout {id} was reported stored but cannot be read back; try again"
            ))
        })?;
        if let Ok(existing) = self.get(id) {
            return Ok(existing);
        }
        tracing::info!(rollout = %id, "a retried start found the rollout its first attempt stored");
        self.ports.hub.register(id);
        if let Err(error) = self.ports.hub.publish(&events) {
            tracing::error!(rollout = %id, %error, "stored event log has a gap");
        }
        self.spawn(rollout.clone());
        Ok(rollout)
    }

    /// Sends a command to a rollout's driver and waits for the outcome. Commands on a
    /// finished rollout: abort changes nothing, the others are refused.
    pub async fn command(&self, id: &str, command: Command) -> Result<Rollout, EngineError> {
        let (sender, current) = {
            let entries = self
                .entries
                .lock()
                .map_err(|_| EngineError::Internal("state lock poisoned".into()))?;
            let entry = entries
                .get(id)
                .ok_or_else(|| EngineError::NotFound(format!("rollout {id} not found")))?;
            (entry.commands.clone(), entry.view.borrow().clone())
        };
        let finished = |r: Rollout| match decide::command_on_finished(&r, &command) {
            Ok(()) => Ok(r),
            Err(refused) => Err(EngineError::Refused(refused.0)),
        };
        let Some(sender) = sender.filter(|_| !current.phase.is_terminal()) else {
            return finished(current);
        };
        let (reply, answer) = oneshot::channel();
        if sender
            .send(Envelope {
                command: command.clone(),
                reply,
            })
            .await
            .is_err()
        {
            return finished(self.get(id)?);
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => {
                let now = self.get(id)?;
                if now.phase.is_terminal() {
                    finished(now)
                } else {
                    Err(EngineError::Interrupted(
                        "the server is shutting down".into(),
                    ))
                }
            }
        }
    }

    /// Stops every driver between steps and waits for them.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let mut drivers = match self.drivers.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return,
        };
        while drivers.join_next().await.is_some() {}
    }

    /// Cancelled when the supervisor shuts down.
    pub fn stopping(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
