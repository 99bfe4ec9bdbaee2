//! One driver task per active rollout: observe (calling the webhooks that are due), decide,
//! act, persist, publish, in that order, one step at a time, so a step is never left
//! half-written by shutdown. Observing writes nothing, so a command or shutdown arriving
//! while it waits on a slow webhook interrupts it.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::decide::{self, Action, ActionFailure, Command, Decision, Observation};
use super::{EngineConfig, EngineError, Ports};
use crate::cache::Subscription;
use crate::domain::promoted_template;
use crate::domain::{EventKind, HookAnswer, Phase, Rollout, RolloutEvent, WebhookKind};
use crate::metrics::templates::Vars;
use crate::router::RouteSplit;
use crate::store::StoreError;
use crate::webhooks::Payload;

/// Longest and shortest delay before a failed step is tried again.
const RETRY: Duration = Duration::from_secs(1);
const MIN_RETRY: Duration = Duration::from_millis(100);
/// Times a half-applied step is replayed before the driver decides afresh from what it sees.
const MAX_REPLAYS: u32 = 30;
/// Attempts at committing a caller's command before answering UNAVAILABLE.
const COMMAND_ATTEMPTS: usize = 5;
/// First pause between command attempts (doubling).
const COMMAND_BACKOFF: Duration = Duration::from_millis(100);

/// The pauses between attempts at committing a command: 100 ms, doubling, one fewer than
/// the attempts.
fn command_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(COMMAND_BACKOFF)
        .with_factor(2.0)
        .without_max_delay()
        .with_max_times(COMMAND_ATTEMPTS - 1)
        .build()
}
/// Write conflicts in a row (each followed by a reload) after which the driver gives the
/// rollout up to whoever else keeps writing it.
const MAX_CONFLICTS: u32 = 5;

/// A decision some of whose actions already changed the world but which is not persisted
/// yet. It is replayed as it stands (its actions are absolute, so repeating them is
/// harmless) rather than decided again, so the recorded step is the step that was applied.
struct Unfinished {
    decision: Decision,
    at: DateTime<Utc>,
    replays: u32,
}

/// A commit that failed, and whether it may have changed something already (an action went
/// through, or the state write was attempted).
struct CommitError {
    message: String,
    acted: bool,
    /// The action failed in a way retrying cannot fix.
    permanent: Option<ActionFailure>,
}

/// A failed action, and whether retrying it can help.
struct ActError {
    message: String,
    permanent: bool,
}

impl ActError {
    fn from_router(error: crate::router::RouterError) -> Self {
        Self {
            permanent: error.is_permanent(),
            message: error.to_string(),
        }
    }

    fn from_workloads(error: crate::workloads::WorkloadError) -> Self {
        Self {
            permanent: error.is_permanent(),
            message: error.to_string(),
        }
    }
}

/// The last answer of `decide::ga_runs_canary`, with the templates and a hash of the
/// selectors it was worked out on. Views of unchanged Deployments share their templates, and
/// the memo holds on to them (so a template it names cannot be freed and its address reused):
/// an unchanged pair is answered without copying and hashing both templates again.
struct RunsMemo {
    ga: std::sync::Arc<serde_json::Value>,
    canary: std::sync::Arc<serde_json::Value>,
    selectors: u64,
    runs: bool,
}

/// A hash of both selectors (a few labels each): the memo keeps this rather than copies.
fn selectors_hash(
    ga: &crate::domain::DeploymentView,
    canary: &crate::domain::DeploymentView,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    ga.selector.hash(&mut hasher);
    canary.selector.hash(&mut hasher);
    hasher.finish()
}

/// `decide::ga_runs_canary`, from `memo` when neither Deployment's template nor selector
/// changed since it was last worked out.
fn ga_runs_canary(
    memo: &mut Option<Box<RunsMemo>>,
    ga: &crate::domain::DeploymentView,
    canary: &crate::domain::DeploymentView,
) -> bool {
    let selectors = selectors_hash(ga, canary);
    if let Some(m) = memo.as_deref()
        && std::sync::Arc::ptr_eq(&m.ga, &ga.template)
        && std::sync::Arc::ptr_eq(&m.canary, &canary.template)
        && m.selectors == selectors
    {
        return m.runs;
    }
    let runs = decide::ga_runs_canary(ga, canary);
    *memo = Some(Box::new(RunsMemo {
        ga: ga.template.clone(),
        canary: canary.template.clone(),
        selectors,
        runs,
    }));
    runs
}

/// A command with the channel its answer goes back on.
pub(crate) struct Envelope {
    pub command: Command,
    /// Who sent it; the events it causes say so.
    pub by: Option<String>,
    pub reply: oneshot::Sender<Result<Rollout, EngineError>>,
}

pub(crate) struct Driver {
    pub ports: Ports,
    pub config: EngineConfig,
    pub state: Rollout,
    pub view: watch::Sender<Rollout>,
    pub commands: mpsc::Receiver<Envelope>,
    pub shutdown: CancellationToken,
    /// Boxed: rare, and a decision is large next to an idle driver.
    unfinished: Option<Box<Unfinished>>,
    /// Write conflicts in a row.
    conflicts: u32,
    /// Set when another writer keeps changing the rollout: this driver stops.
    given_up: bool,
    /// The last canary weight written (or tried) that the state does not record yet.
    unrecorded_weight: Option<u32>,
    /// An action that failed in a way retrying cannot fix, for the next decision.
    failure: Option<ActionFailure>,
    /// When the confirm-rollout webhooks were last called (they are asked once an interval).
    gate_called_at: Option<DateTime<Utc>>,
    /// Whether GA runs the canary's template, as last worked out.
    runs: Option<Box<RunsMemo>>,
    /// Whether the last decision waits on the rollout's objects (`Decision::watch`): a
    /// change to one of them wakes the driver.
    watching: bool,
}

/// Returns once one of the subscribed objects changed; never without a subscription.
async fn changed(changes: Option<&Subscription>) {
    match changes {
        Some(changes) => changes.changed().await,
        None => std::future::pending().await,
    }
}

/// What the driver knows besides the state, for an observation.
#[derive(Clone)]
struct Known {
    unrecorded_weight: Option<u32>,
    failure: Option<ActionFailure>,
}

impl Driver {
    pub fn new(
        ports: Ports,
        config: EngineConfig,
        state: Rollout,
        view: watch::Sender<Rollout>,
        commands: mpsc::Receiver<Envelope>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            ports,
            config,
            state,
            view,
            commands,
            shutdown,
            unfinished: None,
            conflicts: 0,
            given_up: false,
            unrecorded_weight: None,
            failure: None,
            gate_called_at: None,
            runs: None,
            watching: false,
        }
    }

    fn known(&self) -> Known {
        Known {
            unrecorded_weight: self.unrecorded_weight,
            failure: self.failure.clone(),
        }
    }

    fn route(&self) -> RouteSplit {
        RouteSplit::of(&self.state)
    }

    /// The span of one step: the last recorded event, which the step's events follow, and
    /// the phase and canary weight the step starts from.
    fn step_span(&self) -> tracing::Span {
        tracing::info_span!(
            "step",
            sequence = self.state.last_sequence,
            phase = self.state.phase.name(),
            weight = self.state.canary_weight
        )
    }

    /// Drives the rollout to its end (or until shutdown), every log line of it in the
    /// rollout's span. Not an `async fn`: its future would hold the driver twice (as its
    /// argument and inside `drive`'s future), and every active rollout keeps one.
    pub fn run(self) -> impl std::future::Future<Output = ()> {
        let span = tracing::info_span!(
            "rollout",
            id = %self.state.id,
            namespace = %self.state.namespace,
            target = %self.state.target
        );
        self.drive().instrument(span)
    }

    async fn drive(mut self) {
        // The step futures are boxed while they run, so an idle driver (most of them, most of
        // the time) holds a small future rather than the largest step's state.
        if !self.state.phase.is_terminal() {
            let step = self.step_span();
            Box::pin(self.reconcile_weight()).instrument(step).await;
        }
        // Changes to the rollout's objects, which wake a driver waiting on them.
        let changes = self.ports.changes.as_ref().map(|changes| {
            changes.subscribe(
                &self.state.namespace,
                &[
                    &self.state.target,
                    &self.state.canary,
                    &self.state.route.name,
                ],
            )
        });
        let mut wake = Instant::now();
        while !self.state.phase.is_terminal() && !self.given_up {
            let watching = std::mem::take(&mut self.watching);
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                envelope = self.commands.recv() => {
                    let Some(envelope) = envelope else { break };
                    let step = self.step_span();
                    let answer = Box::pin(self.command(envelope.command, envelope.by))
                        .instrument(step)
                        .await;
                    let _ = envelope.reply.send(answer);
                    wake = Instant::now();
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = changed(changes.as_ref()), if watching => {}
            }
            let step = self.step_span();
            if self.unfinished.is_some() {
                wake = Instant::now() + Box::pin(self.replay()).instrument(step).await;
                continue;
            }
            let now = Utc::now();
            let known = self.known();
            let gate_called_at = self.gate_called_at;
            // Observing may wait on webhooks for as long as their timeouts; it writes nothing,
            // so a command or shutdown arriving meanwhile drops it rather than wait.
            let (obs, gate_called) = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                envelope = self.commands.recv() => {
                    let Some(envelope) = envelope else { break };
                    let step = self.step_span();
                    let answer = Box::pin(self.command(envelope.command, envelope.by))
                        .instrument(step)
                        .await;
                    let _ = envelope.reply.send(answer);
                    wake = Instant::now();
                    continue;
                }
                observed = Box::pin(observe(
                    &self.ports,
                    &self.config,
                    &self.state,
                    known,
                    Some((now, gate_called_at)),
                    &mut self.runs,
                )).instrument(step.clone()) => observed,
            };
            if gate_called {
                self.gate_called_at = Some(now);
            }
            let (after, watch) = Box::pin(self.tick(obs, now)).instrument(step).await;
            wake = Instant::now()
                + match watch {
                    Some(watch) if changes.is_some() => {
                        self.watching = true;
                        watch
                    }
                    _ => after,
                };
        }
        // Commands that raced the end get the final state.
        self.commands.close();
        while let Ok(envelope) = self.commands.try_recv() {
            let _ = envelope.reply.send(Ok(self.state.clone()));
        }
        tracing::debug!(rollout = %self.state.id, phase = self.state.phase.name(), "driver stopped");
    }

    /// After a restart the route is the truth about traffic: reads the weight back
    /// and records what `decide::resumed_at` makes of it.
    async fn reconcile_weight(&mut self) {
        if !decide::reads_weight_back(&self.state) {
            return;
        }
        let route = self.route();
        let weight = match self.ports.router.canary_weight(&route).await {
            Ok(weight) => weight,
            Err(error) => {
                tracing::warn!(rollout = %self.state.id, %error, "could not read weights back");
                return;
            }
        };
        let now = Utc::now();
        let Some(decision) = decide::resumed_at(&self.state, weight, now) else {
            if weight != self.state.canary_weight {
                // Not a step of ours that missed its state write: someone else set it. The
                // next decision sees the edit and pauses the rollout.
                tracing::warn!(rollout = %self.state.id, weight, recorded = self.state.canary_weight, "the route was changed while the server was down");
            }
            return;
        };
        if let Err(error) = self.commit(&decision, now).await {
            tracing::warn!(rollout = %self.state.id, error = %error.message, "could not record the weight read back");
        }
    }

    /// A failed step is tried again soon (most API failures are transient), but never
    /// faster than a quarter of the interval.
    fn retry_delay(&self) -> Duration {
        (self.state.analysis.interval / 4).clamp(MIN_RETRY, RETRY)
    }

    /// Replays a half-applied step. `Ok` when there was none or it is now recorded.
    async fn finish_unfinished(&mut self) -> Result<(), String> {
        let Some(mut unfinished) = self.unfinished.take() else {
            return Ok(());
        };
        match self.commit(&unfinished.decision, unfinished.at).await {
            Ok(()) => Ok(()),
            Err(error) if error.permanent.is_some() => {
                // Replaying cannot finish it: decide afresh, knowing why.
                self.failure = error.permanent;
                Err(error.message)
            }
            Err(error) => {
                unfinished.replays += 1;
                if unfinished.replays < MAX_REPLAYS {
                    self.unfinished = Some(unfinished);
                } else {
                    tracing::error!(rollout = %self.state.id, error = %error.message, "a half-applied step keeps failing; deciding afresh");
                    self.reconcile_weight().await;
                }
                Err(error.message)
            }
        }
    }

    /// Replays a half-applied step; returns when to look again.
    async fn replay(&mut self) -> Duration {
        let wake = self
            .unfinished
            .as_ref()
            .map_or(Duration::ZERO, |u| u.decision.wake);
        match self.finish_unfinished().await {
            Ok(()) => wake,
            Err(_) if self.failure.is_some() => Duration::ZERO,
            Err(error) => {
                tracing::warn!(rollout = %self.state.id, %error, "recording the step failed; retrying");
                self.retry_delay()
            }
        }
    }

    /// Decides on what was observed at `now`, acts and records; returns when to look again,
    /// and how late if changes to the rollout's objects wake the driver (`Decision::watch`).
    async fn tick(&mut self, obs: Observation, now: DateTime<Utc>) -> (Duration, Option<Duration>) {
        let decision = decide::decide(&self.state, &obs, now);
        let wake = decision.wake;
        let watch = decision.watch;
        let after = match self.commit(&decision, now).await {
            Ok(()) => return (wake, watch),
            Err(CommitError {
                message,
                permanent: Some(failure),
                ..
            }) => {
                tracing::warn!(rollout = %self.state.id, error = %message, "step failed and retrying cannot fix it");
                self.failure = Some(failure);
                Duration::ZERO
            }
            Err(error) => {
                tracing::warn!(rollout = %self.state.id, error = %error.message, "step failed; retrying");
                if error.acted {
                    self.unfinished = Some(Box::new(Unfinished {
                        decision,
                        at: now,
                        replays: 0,
                    }));
                }
                self.retry_delay()
            }
        };
        (after, None)
    }

    async fn command(
        &mut self,
        command: Command,
        by: Option<String>,
    ) -> Result<Rollout, EngineError> {
        // A command is decided on the recorded state, so a half-applied step is recorded
        // first. An abort does not wait for it: its weight write supersedes the step's.
        if let Err(error) = self.finish_unfinished().await {
            if !matches!(command, Command::Abort { .. }) {
                return Err(EngineError::Interrupted(format!(
                    "rollout {}: the last step is not recorded yet ({error}); try again",
                    self.state.id
                )));
            }
            self.unfinished = None;
        }
        let now = Utc::now();
        let obs = self.observe().await;
        let mut decision = decide::apply_command(&self.state, &command, &obs, now)
            .map_err(|refused| EngineError::Refused(refused.0))?;
        if let Some(by) = by.filter(|b| !b.is_empty()) {
            decision.attribute_to(&by);
        }
        let mut pauses = command_backoff();
        let mut attempt = 1;
        while let Err(error) = self.commit(&decision, now).await {
            if let Some(failure) = error.permanent {
                // Retrying cannot carry the command out: the rollout ends FAILED at once,
                // saying what it could not do, and that is the answer.
                tracing::warn!(rollout = %self.state.id, error = %error.message, "command failed and retrying cannot fix it");
                self.failure = Some(failure);
                let now = Utc::now();
                let obs = self.observe().await;
                // Decided on the recorded state, with the ending the command meant (an
                // abort's reason), so the FAILED message keeps the operator's words.
                let mut intent = self.state.clone();
                intent.ending = decision.next.ending.clone();
                let ended = decide::decide(&intent, &obs, now);
                return match self.commit(&ended, now).await {
                    Ok(()) => Ok(self.state.clone()),
                    Err(error) => Err(EngineError::Interrupted(format!(
                        "rollout {}: {}; recording that failed too: {}",
                        self.state.id,
                        obs.failure.map(|f| f.error).unwrap_or_default(),
                        error.message
                    ))),
                };
            }
            let Some(pause) = pauses.next() else {
                if error.acted {
                    self.unfinished = Some(Box::new(Unfinished {
                        decision,
                        at: now,
                        replays: 0,
                    }));
                }
                return Err(EngineError::Interrupted(format!(
                    "rollout {}: {}",
                    self.state.id, error.message
                )));
            };
            tracing::warn!(rollout = %self.state.id, error = %error.message, attempt, "command failed; retrying");
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
        // An abort answers once traffic is on GA; with no scale-down delay the canary is
        // scaled down before the answer too.
        if self.state.phase == Phase::RollingBack {
            let now = Utc::now();
            let obs = self.observe().await;
            let decision = decide::decide(&self.state, &obs, now);
            if let Err(error) = self.commit(&decision, now).await {
                tracing::warn!(rollout = %self.state.id, error = %error.message, "scale-down after abort failed; retrying");
                if error.acted {
                    self.unfinished = Some(Box::new(Unfinished {
                        decision,
                        at: now,
                        replays: 0,
                    }));
                }
            }
        }
        Ok(self.state.clone())
    }

    /// What a command is decided on: the cluster as the caches have it, no measurement, no
    /// webhook called.
    async fn observe(&self) -> Observation {
        observe(
            &self.ports,
            &self.config,
            &self.state,
            self.known(),
            None,
            &mut None,
        )
        .await
        .0
    }

    async fn act(&mut self, action: &Action) -> Result<(), ActError> {
        let ns = &self.state.namespace;
        let w = &self.ports.workloads;
        match action {
            Action::SetCanaryWeight(weight) => {
                self.unrecorded_weight = Some(*weight);
                self.ports
                    .router
                    .set_canary_weight(&self.route(), *weight)
                    .await
                    .map(|_| ())
                    .map_err(ActError::from_router)
            }
            Action::ScaleCanary(n) => w
                .scale(ns, &self.state.canary, *n)
                .await
                .map_err(ActError::from_workloads),
            Action::ScaleGa(n) => w
                .scale(ns, &self.state.target, *n)
                .await
                .map_err(ActError::from_workloads),
            Action::ApplyImages => w
                .set_images(ns, &self.state.canary, &self.state.images)
                .await
                .map_err(ActError::from_workloads),
            Action::PromoteTemplate => {
                let (Some(ga), Some(canary)) = (
                    w.deployment(ns, &self.state.target),
                    w.deployment(ns, &self.state.canary),
                ) else {
                    return Err(ActError {
                        message: "GA or canary deployment disappeared".into(),
                        permanent: false,
                    });
                };
                // Only the revision under analysis is ever copied over GA.
                if canary.revision() != self.state.revision {
                    return Err(ActError {
                        message: format!(
                            "the canary moved on from revision {} to {}",
                            self.state.revision,
                            canary.revision()
                        ),
                        permanent: false,
                    });
                }
                let template = promoted_template(&canary.template, &canary.selector, &ga.selector);
                w.replace_template(ns, &self.state.target, &template)
                    .await
                    .map_err(ActError::from_workloads)
            }
        }
    }

    /// Acts, then persists the state with its new events in one write, then publishes.
    async fn commit(&mut self, decision: &Decision, now: DateTime<Utc>) -> Result<(), CommitError> {
        for (done, action) in decision.actions.iter().enumerate() {
            self.may_write(done > 0)?;
            self.act(action).await.map_err(|error| CommitError {
                permanent: error.permanent.then(|| ActionFailure {
                    action: action.clone(),
                    error: error.message.clone(),
                }),
                message: error.message,
                acted: done > 0,
            })?;
        }
        if !decision.changes(&self.state) {
            self.unrecorded_weight = None;
            return Ok(());
        }
        let (next, events) = decision.record(now);
        self.may_write(!decision.actions.is_empty())?;
        match self.ports.store.append(&next, &events).await {
            Ok(()) => self.conflicts = 0,
            Err(StoreError::Conflict { .. }) => {
                // Someone else wrote the rollout: what this step decided rests on a state
                // that is gone. Take the stored one and decide again from it.
                let message = format!(
                    "rollout {} was changed by another writer; reloaded the stored state",
                    self.state.id
                );
                self.reload_after_conflict().await;
                return Err(CommitError {
                    message,
                    acted: false,
                    permanent: None,
                });
            }
            Err(e) => {
                return Err(CommitError {
                    message: e.to_string(),
                    // A failed write may still have landed (its answer lost), so the step is
                    // replayed as it stands rather than decided again with other events.
                    acted: true,
                    permanent: None,
                });
            }
        }
        self.state = next;
        self.unrecorded_weight = None;
        if self.state.phase.is_terminal() {
            self.failure = None;
        }
        self.view.send_replace(self.state.clone());
        if let Err(error) = self.ports.hub.publish(&events) {
            tracing::error!(rollout = %self.state.id, %error, "event log out of order");
        }
        announce(&self.ports, &self.state, &events);
        Ok(())
    }
}

impl Driver {
    /// The fence: once this driver's term has ended (shutdown, or the replica no longer
    /// leads), it writes nothing more.
    fn may_write(&self, acted: bool) -> Result<(), CommitError> {
        if self.shutdown.is_cancelled() {
            return Err(CommitError {
                message: "this server stopped driving the rollout (shutting down or no longer the leader)".into(),
                acted,
                permanent: None,
            });
        }
        Ok(())
    }

    /// After a write conflict: adopts the stored state and publishes the events the other
    /// writer added, so watchers see them in order. Past `MAX_CONFLICTS` in a row the driver
    /// stops and says so, in the log and as a Kubernetes Event on GA.
    async fn reload_after_conflict(&mut self) {
        self.conflicts += 1;
        self.unfinished = None;
        let id = self.state.id.clone();
        match self.ports.store.get(&self.state.namespace, &id).await {
            Ok(Some((stored, events))) => {
                tracing::warn!(rollout = %id, stored_sequence = stored.last_sequence, our_sequence = self.state.last_sequence, phase = stored.phase.name(), "state write conflict: another writer changed the rollout; continuing from the stored state");
                let fresh: Vec<RolloutEvent> = events
                    .into_iter()
                    .filter(|e| e.sequence > self.state.last_sequence.min(stored.last_sequence))
                    .collect();
                if let Err(error) = self.ports.hub.publish(&fresh) {
                    tracing::error!(rollout = %id, %error, "stored event log does not follow the published one");
                }
                self.state = stored;
                self.view.send_replace(self.state.clone());
            }
            Ok(None) => {
                tracing::error!(rollout = %id, "state write conflict and the stored rollout is gone; stopping its driver");
                self.give_up("its stored state was deleted").await;
                return;
            }
            Err(error) => {
                tracing::warn!(rollout = %id, %error, "state write conflict; reading the stored state failed");
            }
        }
        if self.conflicts >= MAX_CONFLICTS && !self.state.phase.is_terminal() {
            tracing::error!(rollout = %id, conflicts = self.conflicts, "another writer keeps changing this rollout; stopping its driver (is a second steerer server running it?)");
            self.give_up(&format!(
                "another writer changed its state {} times in a row (a second steerer server?)",
                self.conflicts
            ))
            .await;
        }
    }

    async fn give_up(&mut self, why: &str) {
        self.given_up = true;
        let ns = &self.state.namespace;
        if let Some(ga) = self.ports.workloads.deployment(ns, &self.state.target) {
            self.ports
                .workloads
                .record_event(
                    &ga,
                    &self.state.id,
                    "RolloutDriverStopped",
                    &format!(
                        "rollout {}: this server stopped driving it: {why}; restart the server to take it over again",
                        self.state.id
                    ),
                    true,
                )
                .await;
        }
    }
}

/// Logs and counts each event and records it as a Kubernetes Event on the GA Deployment (best
/// effort, off the step's path).
pub(crate) fn announce(ports: &Ports, state: &Rollout, events: &[RolloutEvent]) {
    ports.telemetry.record_events(events);
    for event in events {
        tracing::info!(
            rollout = %state.id,
            namespace = %state.namespace,
            target = %state.target,
            sequence = event.sequence,
            kind = event.kind.reason(),
            phase = event.phase.name(),
            weight = event.canary_weight,
            "{}",
            event.message
        );
    }
    if events.is_empty() {
        return;
    }
    let Some(ga) = ports.workloads.deployment(&state.namespace, &state.target) else {
        return;
    };
    let workloads = ports.workloads.clone();
    let id = state.id.clone();
    let events: Vec<(EventKind, String)> = events
        .iter()
        .map(|e| (e.kind, format!("rollout {}: {}", state.id, e.message)))
        .collect();
    let record = async move {
        for (kind, message) in events {
            workloads
                .record_event(&ga, &id, kind.reason(), &message, kind.is_warning())
                .await;
        }
    };
    // In the step's span: the Event writes are Kubernetes calls of the step.
    tokio::spawn(record.in_current_span());
}

/// Reads the workloads and the route from the caches; for a tick (`Some((now, when
/// the confirm-rollout webhooks were last called))`) also measures the canary and reads its
/// metric templates when a check is due, and calls the webhooks `decide::hooks_due` names.
/// Returns the observation and whether the confirm-rollout webhooks were called.
async fn observe(
    ports: &Ports,
    config: &EngineConfig,
    state: &Rollout,
    known: Known,
    tick: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    runs: &mut Option<Box<RunsMemo>>,
) -> (Observation, bool) {
    let w = &ports.workloads;
    let ns = &state.namespace;
    let ga = w.deployment(ns, &state.target);
    let canary = w.deployment(ns, &state.canary);
    let ga_runs_canary = match (&ga, &canary) {
        (Some(ga), Some(canary)) => ga_runs_canary(runs, ga, canary),
        _ => false,
    };
    let route = ports.router.observe(&RouteSplit::of(state)).await;
    let mut obs = Observation {
        ga_hpa: w.hpa_for(ns, &state.target),
        canary_hpa: w.hpa_for(ns, &state.canary),
        ga,
        canary,
        sample: None,
        baseline: None,
        ga_runs_canary,
        metrics_window: config.metrics_window,
        check_tick: config.check_tick,
        route,
        unrecorded_weight: known.unrecorded_weight,
        scale_down_delay: config.scale_down_delay,
        failure: known.failure,
        metric_values: Vec::new(),
        hooks: Vec::new(),
    };
    let Some((now, gate_called_at)) = tick else {
        return (obs, false);
    };
    let window = decide::check_due(state, &obs, now)
        .then(|| decide::sample_window(state, now, config.metrics_window, config.check_tick))
        .flatten();
    let due = decide::hooks_due(state, &obs, now, gate_called_at);
    let (measured, baseline, hooks) = futures::join!(
        measure(ports, config, state, window),
        async {
            // Boxed: only checks against a baseline pay for its future's size.
            match window.and(decide::baseline_window(state, now)) {
                Some(window) => Box::pin(measure_baseline(ports, state, window)).await,
                None => None,
            }
        },
        call_hooks(ports, state, &due)
    );
    if let Some((sample, metric_values)) = measured {
        obs.sample = Some(sample);
        obs.metric_values = metric_values;
    }
    obs.baseline = baseline.map(Box::new);
    obs.hooks = hooks;
    (obs, due.contains(&WebhookKind::ConfirmRollout))
}

/// A check's measurement over `window`: the canary's sample and the value of each metric
/// template the rollout checks (each distinct template queried once).
async fn measure(
    ports: &Ports,
    config: &EngineConfig,
    state: &Rollout,
    window: Option<Duration>,
) -> Option<(
    Result<crate::domain::Sample, String>,
    Vec<(String, Result<Option<f64>, String>)>,
)> {
    let window = window?;
    let sample = ports.metrics.sample(
        &state.observer,
        &state.namespace,
        &state.canary,
        window,
        state.analysis.max_latency_p99_ms.is_some(),
    );
    let mut templates: Vec<&str> = state
        .analysis
        .metrics
        .iter()
        .map(|m| m.template.as_str())
        .collect();
    templates.sort_unstable();
    templates.dedup();
    let vars = Vars {
        namespace: &state.namespace,
        target: &state.target,
        canary: &state.canary,
        interval: window,
    };
    let values = futures::future::join_all(templates.into_iter().map(|name| {
        let query = config.templates.render(name, &vars);
        async move {
            let value = match query {
                Some(query) => ports.metrics.value(&query).await.map_err(|e| e.to_string()),
                None => Err(format!(
                    "template {name} is no longer defined on this server (--metric-templates)"
                )),
            };
            (name.to_owned(), value)
        }
    }));
    let (sample, values) = futures::join!(sample, values);
    Some((sample.map_err(|e| e.to_string()), values))
}

/// With a baseline and a check due, both sides' counts over `window` (since the analysis
/// started). In GA mode the baseline is GA itself.
async fn measure_baseline(
    ports: &Ports,
    state: &Rollout,
    window: Duration,
) -> Option<Result<crate::domain::BaselineSample, String>> {
    let baseline = match state.analysis.baseline.as_ref()?.mode {
        crate::domain::BaselineMode::Ga => &state.target,
        // Refused at the API until the baseline Deployment is managed.
        crate::domain::BaselineMode::Deployment => return None,
    };
    let sample = ports
        .metrics
        .baseline_sample(
            &state.observer,
            &state.namespace,
            &state.canary,
            baseline,
            window,
        )
        .await;
    Some(sample.map_err(|e| e.to_string()))
}

/// Calls the rollout's webhooks of the kinds `due`, all at once, and returns their answers.
async fn call_hooks(ports: &Ports, state: &Rollout, due: &[WebhookKind]) -> Vec<HookAnswer> {
    let calls = state
        .analysis
        .webhooks
        .iter()
        .filter(|hook| due.contains(&hook.kind))
        .map(|hook| async move {
            let payload = Payload::new(state, hook, decide::hook_phase(state, hook.kind));
            let outcome = ports.webhooks.call(hook, &payload).await;
            let answer = HookAnswer {
                name: hook.name.clone(),
                kind: hook.kind,
                outcome,
            };
            if answer.passed() {
                tracing::debug!(rollout = %state.id, webhook = %hook.name, kind = hook.kind.name(), answer = %answer.detail(), "webhook answered");
            } else {
                tracing::warn!(rollout = %state.id, webhook = %hook.name, kind = hook.kind.name(), answer = %answer.detail(), "webhook said no or did not answer");
            }
            answer
        });
    futures::future::join_all(calls).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whether_ga_runs_the_canary_is_worked_out_again_only_when_a_template_or_selector_changes() {
        use crate::workloads::fake::FakeWorkloads;
        let ga = FakeWorkloads::settled("test", "podinfo", 3, "podinfo:1");
        let canary = FakeWorkloads::settled("test", "podinfo-canary", 3, "podinfo:2");
        let mut memo = None;
        assert!(!ga_runs_canary(&mut memo, &ga, &canary));
        // The memo answers for the same templates, even one it would now answer otherwise:
        // a memo entry stands for exactly the templates it holds.
        let promoted = std::sync::Arc::new(promoted_template(
            &canary.template,
            &canary.selector,
            &ga.selector,
        ));
        let mut forged = memo.take().unwrap();
        forged.runs = true;
        memo = Some(forged);
        assert!(ga_runs_canary(&mut memo, &ga, &canary));
        // GA's template changes (a new view): worked out again.
        let mut promoted_ga = ga.clone();
        promoted_ga.template = promoted;
        assert!(ga_runs_canary(&mut memo, &promoted_ga, &canary));
        // GA's selector changes (its template does not): worked out again.
        let mut relabelled = promoted_ga.clone();
        relabelled
            .selector
            .insert("tier".to_owned(), "web".to_owned());
        assert!(!ga_runs_canary(&mut memo, &relabelled, &canary));
        assert!(!ga_runs_canary(&mut memo, &ga, &canary));
    }

    #[test]
    fn a_command_is_tried_five_times_with_doubling_pauses_between() {
        let pauses: Vec<u128> = command_backoff().map(|d| d.as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800]);
    }
}
