//! Test fixtures shared by every test module: a rollout and its settings built by chaining
//! (`Rollout::test().at_weight(30).in_phase(Phase::Progressing)`), at a fixed time.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::{AnalysisSettings, Phase, Rollout, RouteRef, Strategy, Webhook, WebhookKind};

/// `secs` seconds after the fixed moment the fixtures start at.
pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .expect("a valid timestamp")
}

impl AnalysisSettings {
    /// Fast settings: 10% steps every second, at most 3 failed checks, a 10 s deadline.
    pub fn test() -> Self {
        Self {
            strategy: Strategy::Canary {
                step_weight: 10,
                max_weight: 100,
            },
            interval: Duration::from_secs(1),
            success_rate_threshold: 99.0,
            max_failed_checks: 3,
            progress_deadline: Duration::from_secs(10),
            min_request_rate: 1.0,
            ..Default::default()
        }
    }
}

impl Webhook {
    /// A webhook of `kind` named `name`, calling a local URL.
    pub fn test(name: &str, kind: WebhookKind) -> Self {
        Self {
            name: name.into(),
            kind,
            url: format!("http://127.0.0.1/{name}"),
            timeout: Duration::from_secs(1),
            metadata: BTreeMap::new(),
        }
    }
}

impl Rollout {
    /// Rollout `r1` of test/podinfo (canary podinfo-canary, VirtualService podinfo) with the
    /// `AnalysisSettings::test` settings, pending at weight 0, started at `t(0)` with its
    /// `Started` event recorded and its routes fingerprinted as "routes".
    pub fn test() -> Self {
        let mut rollout = Rollout::new(
            "r1".into(),
            "test".into(),
            "podinfo".into(),
            "podinfo-canary".into(),
            RouteRef::virtual_service("podinfo"),
            AnalysisSettings::test(),
            t(0),
        );
        rollout.last_sequence = 1;
        rollout.route_fingerprint = Some("routes".into());
        rollout
    }

    /// The same rollout with id `id`.
    pub fn named(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }

    /// The same rollout of the Deployment `target` (its canary `TARGET-canary`).
    pub fn of(mut self, target: &str) -> Self {
        self.target = target.into();
        self.canary = format!("{target}-canary");
        self
    }

    pub fn in_phase(mut self, phase: Phase) -> Self {
        self.phase = phase;
        self
    }

    pub fn at_weight(mut self, weight: u32) -> Self {
        self.canary_weight = weight;
        self
    }

    /// The canary was scaled up and its images applied.
    pub fn prepared(mut self) -> Self {
        self.prepared = true;
        self
    }

    /// With events recorded up to `sequence`.
    pub fn at_sequence(mut self, sequence: u64) -> Self {
        self.last_sequence = sequence;
        self
    }

    /// With these webhooks, by name and kind.
    pub fn with_hooks(mut self, hooks: &[(&str, WebhookKind)]) -> Self {
        self.analysis.webhooks = hooks
            .iter()
            .map(|(name, kind)| Webhook::test(name, *kind))
            .collect();
        self
    }

    /// With a 200 ms ceiling on the canary's p99 latency.
    pub fn with_latency_ceiling(mut self) -> Self {
        self.analysis.max_latency_p99_ms = Some(200.0);
        self
    }

    /// Anything else, changed by `f`.
    pub fn with(mut self, f: impl FnOnce(&mut Rollout)) -> Self {
        f(&mut self);
        self
    }
}
