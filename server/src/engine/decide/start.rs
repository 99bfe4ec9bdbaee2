//! The first state of a rollout and its `Started` event.

use std::time::Duration;

use super::Decision;
use crate::domain::{AnalysisSettings, EventKind, Phase, Rollout};

/// The first state of a rollout, checked against the cluster by the caller, and its
/// `Started` event: pending at the canary weight the VirtualService routes now, with the
/// canary's current revision and the fingerprint of the routes it splits.
pub fn start(
    rollout: Rollout,
    canary_revision: String,
    canary_weight: u32,
    route_fingerprint: String,
) -> Decision {
    let mut d = Decision::new(&rollout);
    d.next.phase = Phase::Pending;
    d.next.revision = canary_revision;
    d.next.canary_weight = canary_weight;
    d.next.route_fingerprint = Some(route_fingerprint);
    d.wake = Duration::ZERO;
    let settings = &rollout.analysis;
    d.emit(
        EventKind::Started,
        format!(
            "rollout of {}/{} started: canary {} via VirtualService {}, {} every {}, success rate >= {}%{}",
            rollout.namespace,
            rollout.target,
            rollout.canary,
            rollout.virtual_service,
            settings.strategy.describe(),
            humantime::format_duration(settings.interval),
            settings.success_rate_threshold,
            settings
                .max_latency_p99_ms
                .map(|max| format!(", p99 latency <= {max}ms"))
                .unwrap_or_default()
        ) + &judged_on(settings),
    );
    d
}

/// What a rollout is judged on besides its success rate and latency, for its first event.
fn judged_on(settings: &AnalysisSettings) -> String {
    let mut parts = Vec::new();
    if !settings.metrics.is_empty() {
        let metrics: Vec<String> = settings
            .metrics
            .iter()
            .map(|m| format!("{} {}", m.template, m.bounds()))
            .collect();
        parts.push(format!("metrics {}", metrics.join(", ")));
    }
    if !settings.webhooks.is_empty() {
        let hooks: Vec<String> = settings
            .webhooks
            .iter()
            .map(|w| format!("{} ({})", w.name, w.kind.name()))
            .collect();
        parts.push(format!("webhooks {}", hooks.join(", ")));
    }
    if settings.require_approval {
        parts.push("promotion awaits approval (PromoteRollout)".to_owned());
    }
    parts.iter().map(|p| format!("; {p}")).collect()
}

#[cfg(test)]
#[path = "start_tests.rs"]
mod tests;
