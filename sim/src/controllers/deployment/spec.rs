//! What the controller reads from a Deployment's spec: replicas, template, strategy, and the
//! int-or-percent surge and unavailability resolved against the replica count.

use std::time::Duration;

use serde_json::{Value, json};

const DEFAULT_PROGRESS_DEADLINE_SECONDS: i64 = 600;
const DEFAULT_REVISION_HISTORY_LIMIT: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Strategy {
    Recreate,
    RollingUpdate { surge: i64, unavailable: i64 },
}

/// What the controller reads from a Deployment.
pub(super) struct Spec {
    pub(super) replicas: i64,
    pub(super) generation: i64,
    pub(super) template: Value,
    pub(super) selector: Value,
    pub(super) paused: bool,
    pub(super) strategy: Strategy,
    pub(super) progress_deadline: Option<i64>,
    pub(super) min_ready: Duration,
    pub(super) history_limit: usize,
}

impl Spec {
    pub(super) fn parse(obj: &Value) -> Spec {
        let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
        let replicas = spec
            .get("replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0);
        let strategy = match spec.pointer("/strategy/type").and_then(Value::as_str) {
            Some("Recreate") => Strategy::Recreate,
            _ => {
                let surge = resolve_int_or_percent(
                    spec.pointer("/strategy/rollingUpdate/maxSurge"),
                    replicas,
                    true,
                );
                let mut unavailable = resolve_int_or_percent(
                    spec.pointer("/strategy/rollingUpdate/maxUnavailable"),
                    replicas,
                    false,
                );
                if surge == 0 && unavailable == 0 {
                    unavailable = 1;
                }
                Strategy::RollingUpdate { surge, unavailable }
            }
        };
        Spec {
            replicas,
            generation: obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1),
            template: spec.get("template").cloned().unwrap_or_else(|| json!({})),
            selector: spec.get("selector").cloned().unwrap_or_else(|| json!({})),
            paused: spec.get("paused").and_then(Value::as_bool).unwrap_or(false),
            strategy,
            progress_deadline: Some(
                spec.get("progressDeadlineSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS),
            ),
            min_ready: Duration::from_secs(
                spec.get("minReadySeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            ),
            history_limit: spec
                .get("revisionHistoryLimit")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT),
        }
    }

    /// maxUnavailable as the Available condition uses it.
    pub(super) fn max_unavailable(&self) -> i64 {
        match self.strategy {
            Strategy::RollingUpdate { unavailable, .. } if self.replicas > 0 => {
                unavailable.min(self.replicas)
            }
            _ => 0,
        }
    }
}

/// An int-or-percent field (`maxSurge: 1`, `maxUnavailable: "25%"`) resolved against the
/// replica count: surge rounds up, unavailability rounds down, as Kubernetes does. Absent
/// means 25%.
pub(super) fn resolve_int_or_percent(value: Option<&Value>, total: i64, round_up: bool) -> i64 {
    let percent = |p: f64| {
        let raw = p * total as f64 / 100.0;
        (if round_up { raw.ceil() } else { raw.floor() }) as i64
    };
    match value {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0).max(0),
        Some(Value::String(s)) => match s.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(percent).unwrap_or(0).max(0),
            None => s.trim().parse::<i64>().unwrap_or(0).max(0),
        },
        _ => percent(25.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_or_percent_rounds_surge_up_and_unavailability_down() {
        assert_eq!(resolve_int_or_percent(Some(&json!("25%")), 3, true), 1);
        assert_eq!(resolve_int_or_percent(Some(&json!("25%")), 3, false), 0);
        assert_eq!(resolve_int_or_percent(Some(&json!(2)), 3, false), 2);
        assert_eq!(resolve_int_or_percent(None, 4, false), 1);
    }
}
