//! One driver task per active rollout: observe, decide, act, persist, publish, in that order,
//! one step at a time, so a step is never left half-written by shutdown.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::decide::{self, Action, Command, Decision, Observation};
use super::{EngineConfig, EngineError, Ports};
use crate::domain::{EventKind, Phase, Rollout, RolloutEvent};
use crate::router::RouteRef;
use crate::workloads::{promoted_template, template_hash};

/// Retry delay after a failed action or write.
const RETRY: Duration = Duration::from_secs(1);

/// A command with the channel its answer goes back on.
pub(crate) struct Envelope {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Rollout, EngineError>>,
}

pub(crate) struct Driver {
    pub ports: Ports,
    pub config: EngineConfig,
    pub state: Rollout,
    pub view: watch::Sender<Rollout>,
    pub commands: mpsc::Receiver<Envelope>,
    pub shutdown: CancellationToken,
}

impl Driver {
    fn route(&self) -> RouteRef {
        RouteRef {
            namespace: self.state.namespace.clone(),
            virtual_service: self.state.virtual_service.clone(),
            ga_service: self.state.target.clone(),
            canary_service: self.state.canary.clone(),
        }
    }

    pub async fn run(mut self) {
        if !self.state.phase.is_terminal() {
            self.reconcile_weight().await;
        }
        let mut wake = Instant::now();
        while !self.state.phase.is_terminal() {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                envelope = self.commands.recv() => {
                    let Some(envelope) = envelope else { break };
                    let answer = self.command(envelope.command).await;
                    let _ = envelope.reply.send(answer);
                    wake = Instant::now();
                }
                _ = tokio::time::sleep_until(wake) => {
                    wake = Instant::now() + self.tick().await;
                }
            }
        }
        // Commands that raced the end get the final state.
        self.commands.close();
        while let Ok(envelope) = self.commands.try_recv() {
            let _ = envelope.reply.send(Ok(self.state.clone()));
        }
        tracing::debug!(rollout = %self.state.id, phase = self.state.phase.name(), "driver stopped");
    }

    /// After a restart the VirtualService is the truth about traffic: a step may have been
    /// written without its state.
    async fn reconcile_weight(&mut self) {
        if !matches!(
            self.state.phase,
            Phase::Progressing | Phase::Paused | Phase::Promoting
        ) {
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
        if weight == self.state.canary_weight {
            return;
        }
        let now = Utc::now();
        let mut next = self.state.clone();
        let message = format!(
            "resumed: VirtualService {} routes {weight}% to the canary (state had {}%)",
            route.virtual_service, self.state.canary_weight
        );
        next.canary_weight = weight;
        next.message = message.clone();
        next.updated_at = now;
        let draft = decide::EventDraft {
            kind: EventKind::WeightChanged,
            phase: next.phase,
            canary_weight: weight,
            failed_checks: next.failed_checks,
            sample: None,
            message,
        };
        let decision = Decision {
            next,
            actions: Vec::new(),
            events: vec![draft],
            wake: Duration::ZERO,
        };
        if let Err(error) = self.commit(decision, now).await {
            tracing::warn!(rollout = %self.state.id, %error, "could not record the weight read back");
        }
    }

    async fn tick(&mut self) -> Duration {
        let now = Utc::now();
        let obs = self
            .observe(now, decide::wants_sample(&self.state, now))
            .await;
        let decision = decide::decide(&self.state, &obs, now);
        let wake = decision.wake;
        match self.commit(decision, now).await {
            Ok(()) => wake,
            Err(error) => {
                tracing::warn!(rollout = %self.state.id, %error, "step failed; retrying");
                RETRY.min(self.state.analysis.interval.max(Duration::from_millis(200)))
            }
        }
    }

    async fn command(&mut self, command: Command) -> Result<Rollout, EngineError> {
        let now = Utc::now();
        let obs = self.observe(now, false).await;
        let decision = decide::apply_command(&self.state, &command, &obs, now)
            .map_err(|refused| EngineError::FailedPrecondition(refused.0))?;
        self.commit(decision, now)
            .await
            .map_err(EngineError::Unavailable)?;
        // An abort finishes before answering: traffic on GA and the canary scaled down.
        if self.state.phase == Phase::RollingBack {
            let now = Utc::now();
            let obs = self.observe(now, false).await;
            let decision = decide::decide(&self.state, &obs, now);
            if let Err(error) = self.commit(decision, now).await {
                tracing::warn!(rollout = %self.state.id, %error, "scale-down after abort failed; retrying");
            }
        }
        Ok(self.state.clone())
    }

    async fn observe(&self, now: DateTime<Utc>, measure: bool) -> Observation {
        let w = &self.ports.workloads;
        let ns = &self.state.namespace;
        let ga = w.deployment(ns, &self.state.target);
        let canary = w.deployment(ns, &self.state.canary);
        let ga_runs_canary = match (&ga, &canary) {
            (Some(ga), Some(canary)) => {
                template_hash(&promoted_template(
                    &canary.template,
                    &canary.selector,
                    &ga.selector,
                )) == template_hash(&ga.template)
            }
            _ => false,
        };
        let sample = if measure && canary.is_some() {
            let window = self.state.analysis.interval.max(self.config.metrics_window);
            Some(
                self.ports
                    .metrics
                    .sample(ns, &self.state.canary, window)
                    .await
                    .map_err(|e| e.to_string()),
            )
        } else {
            None
        };
        let _ = now;
        Observation {
            ga_hpa: w.hpa_for(ns, &self.state.target),
            canary_hpa: w.hpa_for(ns, &self.state.canary),
            ga,
            canary,
            sample,
            ga_runs_canary,
        }
    }

    async fn act(&self, action: &Action) -> Result<(), String> {
        let ns = &self.state.namespace;
        let w = &self.ports.workloads;
        match action {
            Action::SetCanaryWeight(weight) => self
                .ports
                .router
                .set_canary_weight(&self.route(), *weight)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Action::ScaleCanary(n) => w
                .scale(ns, &self.state.canary, *n)
                .await
                .map_err(|e| e.to_string()),
            Action::ScaleGa(n) => w
                .scale(ns, &self.state.target, *n)
                .await
                .map_err(|e| e.to_string()),
            Action::ApplyImages => w
                .set_images(ns, &self.state.canary, &self.state.images)
                .await
                .map_err(|e| e.to_string()),
            Action::PromoteTemplate => {
                let (Some(ga), Some(canary)) = (
                    w.deployment(ns, &self.state.target),
                    w.deployment(ns, &self.state.canary),
                ) else {
                    return Err("GA or canary deployment disappeared".into());
                };
                let template = promoted_template(&canary.template, &canary.selector, &ga.selector);
                w.replace_template(ns, &self.state.target, &template)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Acts, then persists the state with its new events in one write, then publishes.
    async fn commit(&mut self, decision: Decision, now: DateTime<Utc>) -> Result<(), String> {
        for action in &decision.actions {
            self.act(action).await?;
        }
        if !decision.changes(&self.state) {
            return Ok(());
        }
        let mut next = decision.next;
        let mut events = Vec::with_capacity(decision.events.len());
        for draft in decision.events {
            next.last_sequence += 1;
            events.push(RolloutEvent {
                rollout_id: next.id.clone(),
                sequence: next.last_sequence,
                time: now,
                kind: draft.kind,
                phase: draft.phase,
                canary_weight: draft.canary_weight,
                success_rate: draft.sample.and_then(|s| s.success_rate),
                request_rate: draft.sample.and_then(|s| s.request_rate),
                failed_checks: draft.failed_checks,
                message: draft.message,
            });
        }
        self.ports
            .store
            .append(&next, &events)
            .await
            .map_err(|e| e.to_string())?;
        self.state = next;
        self.view.send_replace(self.state.clone());
        if let Err(error) = self.ports.hub.publish(&events) {
            tracing::error!(rollout = %self.state.id, %error, "event log out of order");
        }
        announce(&self.ports, &self.state, &events);
        Ok(())
    }
}

/// Logs each event and records it as a Kubernetes Event on the GA Deployment (best effort,
/// off the step's path).
pub(crate) fn announce(ports: &Ports, state: &Rollout, events: &[RolloutEvent]) {
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
    let events: Vec<(EventKind, String)> = events
        .iter()
        .map(|e| (e.kind, format!("rollout {}: {}", state.id, e.message)))
        .collect();
    tokio::spawn(async move {
        for (kind, message) in events {
            workloads
                .record_event(&ga, kind.reason(), &message, kind.is_warning())
                .await;
        }
    });
}
