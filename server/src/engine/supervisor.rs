//! The supervisor owns every active rollout: it starts rollouts (after checking the objects
//! they name), resumes unfinished ones from the store at start-up, routes commands to their
//! drivers, answers reads from the drivers' published state, and lets a rollout go from memory
//! once it finishes (reads of finished rollouts go to the store), pruning old records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::decide::{self, Command};
use super::driver::{Driver, Envelope, announce};
use super::{EngineConfig, EngineError, Ports, StartRequest};
use crate::domain::{Phase, Rollout};
use crate::store::{Filter, StoreError, prune};

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
    commands: mpsc::Sender<Envelope>,
}

type Entries = Arc<Mutex<HashMap<String, Entry>>>;

/// Where a listing starts: after the rollout with this creation time and id, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

/// A ListRollouts query, validated.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filter: Filter,
    /// Only these phases (empty = any).
    pub phases: Vec<Phase>,
    pub active_only: bool,
    /// Rollouts per page (at least one).
    pub page_size: usize,
    /// Continue after this rollout (`None` = the first page).
    pub after: Option<Cursor>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub rollouts: Vec<Rollout>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Orders rollouts newest first (creation time, then id) and cuts out the page `query` asks
/// for.
pub fn page(mut rollouts: Vec<Rollout>, query: &ListQuery) -> Page {
    rollouts.retain(|r| {
        query.filter.matches(r)
            && (!query.active_only || !r.phase.is_terminal())
            && (query.phases.is_empty() || query.phases.contains(&r.phase))
            && query
                .after
                .as_ref()
                .is_none_or(|c| (r.created_at, r.id.as_str()) < (c.created_at, c.id.as_str()))
    });
    rollouts.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let size = query.page_size.max(1);
    let more = rollouts.len() > size;
    rollouts.truncate(size);
    let next = more.then(|| rollouts.last()).flatten().map(|r| Cursor {
        created_at: r.created_at,
        id: r.id.clone(),
    });
    Page { rollouts, next }
}

/// How often every finished record is checked against the retention (the records of a target
/// are also pruned each time one of its rollouts finishes).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Owns the active rollouts and their drivers.
pub struct Supervisor {
    ports: Ports,
    config: EngineConfig,
    entries: Entries,
    /// Serialises starts so two requests cannot both pass the one-active-rollout check.
    start_lock: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    drivers: Mutex<JoinSet<()>>,
    /// The current leadership term: drivers, pruning and auto mode run under it, and stop
    /// writing when it is cancelled. `None` = this replica does not lead.
    term: Mutex<Option<CancellationToken>>,
    /// Active rollouts another replica drives, as their records say (elected deployments).
    followed: Mutex<HashMap<String, Rollout>>,
}

impl Supervisor {
    /// A supervisor with no rollouts.
    pub fn new(ports: Ports, config: EngineConfig) -> Self {
        let shutdown = CancellationToken::new();
        Self {
            ports,
            config,
            entries: Arc::default(),
            start_lock: tokio::sync::Mutex::new(()),
            shutdown: shutdown.clone(),
            drivers: Mutex::new(JoinSet::new()),
            // A server on its own leads from the start; an elected one steps down until it
            // wins the lease.
            term: Mutex::new(Some(shutdown.child_token())),
            followed: Mutex::default(),
        }
    }

    /// The adapters (engine tests build drivers of their own).
    #[cfg(test)]
    pub(crate) fn ports_for_tests(&self) -> Ports {
        self.ports.clone()
    }

    /// The engine settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The events hub.
    pub fn hub(&self) -> &crate::events::Hub {
        &self.ports.hub
    }

    /// Loads every unfinished stored rollout, publishes its events to the hub and resumes it.
    pub async fn restore(&self) -> Result<usize, EngineError> {
        let stored = self.ports.store.load_active().await?;
        let mut resumed = 0;
        for (rollout, events) in stored {
            if rollout.phase.is_terminal() {
                continue;
            }
            self.ports.hub.register(&rollout.id);
            if let Err(error) = self.ports.hub.publish(&events) {
                tracing::error!(rollout = %rollout.id, %error, "stored event log has a gap");
            }
            resumed += 1;
            tracing::info!(rollout = %rollout.id, phase = rollout.phase.name(), weight = rollout.canary_weight, "resuming rollout");
            self.spawn(rollout);
        }
        Ok(resumed)
    }

    /// Starts the driver of an unfinished rollout. When the rollout finishes it leaves
    /// memory, and the records of its target are pruned.
    fn spawn(&self, rollout: Rollout) {
        if rollout.phase.is_terminal() {
            self.ports.hub.forget(&rollout.id);
            return;
        }
        let Some(term) = self.term() else {
            tracing::warn!(rollout = %rollout.id, "not leading: the rollout is left to the leader");
            return;
        };
        if let Ok(mut followed) = self.followed.lock() {
            followed.remove(&rollout.id);
        }
        let (view_tx, view_rx) = watch::channel(rollout.clone());
        let (tx, rx) = mpsc::channel(16);
        let driver = Driver::new(
            self.ports.clone(),
            self.config.clone(),
            rollout.clone(),
            view_tx,
            rx,
            term.child_token(),
        );
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                rollout.id.clone(),
                Entry {
                    view: view_rx.clone(),
                    commands: tx,
                },
            );
        }
        let entries = self.entries.clone();
        let ports = self.ports.clone();
        let retention = self.config.retention;
        let run = async move {
            driver.run().await;
            let last = view_rx.borrow().clone();
            if !last.phase.is_terminal() {
                // Stopped (shutdown, or another writer took over): a later start-up resumes it.
                return;
            }
            if let Ok(mut entries) = entries.lock() {
                entries.remove(&last.id);
            }
            ports.hub.forget(&last.id);
            let filter = Filter {
                namespace: Some(last.namespace.clone()),
                target: Some(last.target.clone()),
            };
            prune_records(&ports, &filter, retention).await;
        };
        if let Ok(mut drivers) = self.drivers.lock() {
            // Finished drivers' results are never read: drop them so the set stays small.
            while drivers.try_join_next().is_some() {}
            drivers.spawn(run);
        }
    }

    fn snapshot(&self) -> Vec<Rollout> {
        let mut all: HashMap<String, Rollout> =
            self.followed.lock().map(|f| f.clone()).unwrap_or_default();
        if let Ok(entries) = self.entries.lock() {
            for (id, entry) in entries.iter() {
                all.insert(id.clone(), entry.view.borrow().clone());
            }
        }
        all.into_values().collect()
    }

    /// Active rollouts held in memory.
    pub fn active(&self) -> Vec<Rollout> {
        self.snapshot()
    }

    /// The active rollout of a target, if any.
    pub fn active_for(&self, namespace: &str, target: &str) -> Option<Rollout> {
        self.snapshot()
            .into_iter()
            .find(|r| r.namespace == namespace && r.target == target && !r.phase.is_terminal())
    }

    /// The newest stored rollout of a target.
    pub async fn latest_for(
        &self,
        namespace: &str,
        target: &str,
    ) -> Result<Option<Rollout>, EngineError> {
        let filter = Filter {
            namespace: Some(namespace.to_owned()),
            target: Some(target.to_owned()),
        };
        let stored = self.ports.store.list(&filter).await?;
        Ok(stored
            .into_iter()
            .max_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id))))
    }

    fn in_memory(&self, id: &str) -> Option<Rollout> {
        self.entries
            .lock()
            .ok()
            .and_then(|e| e.get(id).map(|e| e.view.borrow().clone()))
            .or_else(|| self.followed.lock().ok()?.get(id).cloned())
    }

    fn driven_here(&self, id: &str) -> bool {
        self.entries.lock().is_ok_and(|e| e.contains_key(id))
    }

    /// The current leadership term, if this replica leads.
    fn term(&self) -> Option<CancellationToken> {
        self.term.lock().ok()?.clone().filter(|t| !t.is_cancelled())
    }

    /// Whether this replica leads (always, without leader election).
    pub fn leading(&self) -> bool {
        self.term().is_some()
    }

    fn require_leading(&self) -> Result<(), EngineError> {
        if self.leading() {
            Ok(())
        } else {
            Err(EngineError::NotLeader(
                "this replica does not lead right now; try again".into(),
            ))
        }
    }

    /// Starts a leadership term: resumes every unfinished rollout from the store and runs
    /// pruning (and auto mode, when on) until the term ends. Returns the number resumed.
    pub async fn lead(
        self: &Arc<Self>,
        auto: Option<(Arc<dyn crate::workloads::Workloads>, Vec<String>)>,
    ) -> Result<usize, EngineError> {
        let term = self.shutdown.child_token();
        if let Ok(mut current) = self.term.lock()
            && let Some(old) = current.replace(term.clone())
        {
            old.cancel();
        }
        let resumed = match self.restore().await {
            Ok(resumed) => resumed,
            Err(error) => {
                term.cancel();
                return Err(error);
            }
        };
        tokio::spawn(self.clone().run_pruner(term.clone()));
        if let Some((workloads, namespaces)) = auto {
            tokio::spawn(super::auto::run(self.clone(), workloads, namespaces, term));
        }
        Ok(resumed)
    }

    /// Ends the leadership term: drivers stop before their next write and leave memory (the
    /// records follower keeps following their rollouts).
    pub async fn step_down(&self) {
        if let Some(term) = self.term.lock().ok().and_then(|mut t| t.take()) {
            term.cancel();
        }
        let mut drivers = match self.drivers.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return,
        };
        while drivers.join_next().await.is_some() {}
        let stopped: Vec<Rollout> = self
            .entries
            .lock()
            .map(|mut e| e.drain().map(|(_, e)| e.view.borrow().clone()).collect())
            .unwrap_or_default();
        if let Ok(mut followed) = self.followed.lock() {
            for rollout in stopped {
                if !rollout.phase.is_terminal() {
                    followed.insert(rollout.id.clone(), rollout);
                }
            }
        }
    }

    /// Takes in a rollout's record as the records follower saw it: an active rollout another
    /// replica drives is kept and its new events published; a finished one leaves memory.
    pub fn follow(&self, rollout: Rollout, events: Vec<crate::domain::RolloutEvent>) {
        if self.driven_here(&rollout.id) {
            return;
        }
        let hub = &self.ports.hub;
        if rollout.phase.is_terminal() {
            if hub.contains(&rollout.id) {
                if let Err(error) = hub.publish(&events) {
                    tracing::error!(rollout = %rollout.id, %error, "a followed event log has a gap");
                }
                hub.forget(&rollout.id);
            }
            if let Ok(mut followed) = self.followed.lock() {
                followed.remove(&rollout.id);
            }
            return;
        }
        hub.register(&rollout.id);
        if let Err(error) = hub.publish(&events) {
            tracing::error!(rollout = %rollout.id, %error, "a followed event log has a gap");
        }
        if let Ok(mut followed) = self.followed.lock() {
            followed.insert(rollout.id.clone(), rollout);
        }
    }

    /// Forgets a rollout whose record was deleted.
    pub fn unfollow(&self, id: &str) {
        if let Ok(mut followed) = self.followed.lock()
            && followed.remove(id).is_some()
        {
            self.ports.hub.forget(id);
        }
    }

    /// One rollout: an active one from memory, a finished one from the store.
    pub async fn get(&self, id: &str) -> Result<Rollout, EngineError> {
        if let Some(rollout) = self.in_memory(id) {
            return Ok(rollout);
        }
        match self.ports.store.find(id).await? {
            Some((rollout, _)) => Ok(rollout),
            None => Err(EngineError::NotFound(format!("rollout {id} not found"))),
        }
    }

    /// A rollout's stored record with its kept events, found by id.
    pub async fn stored(&self, id: &str) -> Result<Option<crate::store::Stored>, EngineError> {
        Ok(self.ports.store.find(id).await?)
    }

    /// The rollouts a listing pages through, in no order: active-only listings are answered
    /// from memory, the others read the store.
    pub async fn listed(&self, query: &ListQuery) -> Result<Vec<Rollout>, EngineError> {
        if query.active_only {
            Ok(self.snapshot())
        } else {
            Ok(self.ports.store.list(&query.filter).await?)
        }
    }

    /// One page of rollouts, newest first.
    pub async fn list(&self, query: &ListQuery) -> Result<Page, EngineError> {
        Ok(page(self.listed(query).await?, query))
    }

    /// Deletes finished records past the retention, in every served namespace.
    pub async fn prune(&self) {
        prune_records(&self.ports, &Filter::default(), self.config.retention).await;
    }

    /// Prunes every `PRUNE_EVERY` until `stop`.
    pub async fn run_pruner(self: Arc<Self>, stop: CancellationToken) {
        loop {
            self.prune().await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
            }
        }
    }

    /// Starts a rollout after checking everything it names. A rejected request changes
    /// nothing.
    pub async fn start(&self, request: StartRequest) -> Result<Rollout, EngineError> {
        let _guard = self.start_lock.lock().await;
        self.require_leading()?;
        // A request id is a key within its namespace (the rollout id derives from both), so
        // the same key in another namespace is another request.
        if !request.request_id.is_empty() {
            let id = rollout_id_for_request(&request.namespace, &request.request_id);
            if let Some(existing) = self.in_memory(&id) {
                return Ok(existing);
            }
            if let Some((existing, _)) = self.ports.store.get(&request.namespace, &id).await? {
                if existing.phase.is_terminal() {
                    return Ok(existing);
                }
                // Stored by an earlier attempt whose answer was lost: take it over.
                return self.adopt(&request.namespace, &id).await;
            }
        }
        let ns = &request.namespace;
        let canary_name = decide::canary_name(&request);
        let w = &self.ports.workloads;
        let canary = w.deployment(ns, &canary_name);
        let canary = decide::admit(
            &request,
            self.active_for(ns, &request.target).as_ref(),
            w.deployment(ns, &request.target).as_ref(),
            canary.as_ref(),
        )?;
        let resolved = self
            .ports
            .router
            .resolve(ns, request.route.as_ref(), &request.target, &canary_name)
            .await?;
        let observer = request
            .observer
            .clone()
            .unwrap_or_else(|| self.config.observer.clone());
        self.preflight(&observer, ns, &request.target, &canary_name)
            .await?;

        let now = Utc::now();
        let id = if request.request_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            rollout_id_for_request(ns, &request.request_id)
        };
        let mut rollout = decide::requested(&request, id.clone(), canary_name, resolved.route, now);
        rollout.observer = observer;
        let (rollout, started) = decide::start(
            rollout,
            canary.revision(),
            resolved.canary_weight,
            resolved.fingerprint,
        )
        .record(now);
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
    async fn preflight(
        &self,
        observer: &str,
        ns: &str,
        target: &str,
        canary: &str,
    ) -> Result<(), EngineError> {
        let workloads = [target.to_owned(), canary.to_owned()];
        let coverage = self
            .ports
            .metrics
            .coverage(observer, ns, &workloads, METRICS_LOOKBACK)
            .await
            .map_err(EngineError::MetricsUnreachable)?;
        if coverage.reported.is_empty() && coverage.scraping {
            let series = crate::metrics::observer::by_name(observer)
                .map_or("request series", |o| o.requests_series());
            return Err(EngineError::Refused(format!(
                "Prometheus has no {series} for deployment {ns}/{target} or its canary {ns}/{canary} in the last {}: the mesh does not report these workloads or Prometheus does not scrape it, so every check would have no data; nothing was changed",
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
        if let Some(existing) = self.in_memory(id) {
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
        self.command_by(id, command, None).await
    }

    /// [`command`](Self::command) on behalf of a caller, whom the events it causes name.
    pub async fn command_by(
        &self,
        id: &str,
        command: Command,
        by: Option<String>,
    ) -> Result<Rollout, EngineError> {
        let entry = {
            let entries = self
                .entries
                .lock()
                .map_err(|_| EngineError::Internal("state lock poisoned".into()))?;
            entries
                .get(id)
                .map(|e| (e.commands.clone(), e.view.borrow().clone()))
        };
        let finished = |r: Rollout| match decide::command_on_finished(&r, &command) {
            Ok(()) => Ok(r),
            Err(refused) => Err(EngineError::Refused(refused.0)),
        };
        let Some((sender, current)) = entry.filter(|(_, r)| !r.phase.is_terminal()) else {
            let rollout = self.get(id).await?;
            if !rollout.phase.is_terminal() {
                self.require_leading()?;
            }
            return finished(rollout);
        };
        let (reply, answer) = oneshot::channel();
        if sender
            .send(Envelope {
                command: command.clone(),
                by,
                reply,
            })
            .await
            .is_err()
        {
            return finished(self.in_memory(id).unwrap_or(current));
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => {
                let now = self.get(id).await?;
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

/// Deletes the finished records `filter` selects that the retention no longer keeps.
async fn prune_records(ports: &Ports, filter: &Filter, retention: prune::Retention) {
    let records = match ports.store.list(filter).await {
        Ok(records) => records,
        Err(error) => {
            tracing::warn!(%error, "could not list rollout records to prune");
            return;
        }
    };
    for (namespace, id) in prune::select(&records, retention, Utc::now()) {
        match ports.store.delete(&namespace, &id).await {
            Ok(_) => tracing::debug!(rollout = %id, %namespace, "pruned a finished rollout record"),
            Err(error) => tracing::warn!(rollout = %id, %error, "could not prune a rollout record"),
        }
    }
}
