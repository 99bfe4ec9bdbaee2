//! The Deployment status kube-controller-manager writes: replica counts, the Available and
//! Progressing conditions, and the progress deadline.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::pods::ReplicaSet;
use super::spec::Spec;
use crate::store::now_rfc3339;

pub(super) struct ComputedStatus {
    pub(super) value: Value,
    pub(super) wakeup: Option<Instant>,
}

pub(super) fn compute_status(
    obj: &Value,
    spec: &Spec,
    sets: &[ReplicaSet],
    new_index: Option<usize>,
    new_set_event: Option<(&'static str, String)>,
    now: Instant,
) -> ComputedStatus {
    let old_status = obj.get("status").cloned().unwrap_or_else(|| json!({}));
    let old_count = |field: &str| old_status.get(field).and_then(Value::as_i64).unwrap_or(0);
    let replicas: i64 = sets.iter().map(ReplicaSet::len).sum();
    let updated = new_index.map(|i| sets[i].len()).unwrap_or(0);
    let ready: i64 = sets.iter().map(|s| s.ready(now)).sum();
    let available: i64 = sets.iter().map(|s| s.available(now, spec.min_ready)).sum();
    let unavailable = (replicas - available).max(0);

    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(spec.generation));
    for (field, value) in [
        ("replicas", replicas),
        ("updatedReplicas", updated),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("unavailableReplicas", unavailable),
    ] {
        if value != 0 {
            status.insert(field.into(), json!(value));
        }
    }
    if let Some(collisions) = old_status.get("collisionCount") {
        status.insert("collisionCount".into(), collisions.clone());
    }

    let stamp = now_rfc3339();
    let mut conditions: Vec<Value> = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        json!({"type": type_, "status": status, "lastUpdateTime": stamp,
               "lastTransitionTime": stamp, "reason": reason, "message": message})
    };
    if available >= spec.replicas - spec.max_unavailable() {
        set_condition(
            &mut conditions,
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut conditions,
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }

    let progressing_reason = |conds: &[Value]| {
        find_condition(conds, "Progressing")
            .and_then(|c| c.get("reason"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut wakeup = None;
    if spec.paused {
        if progressing_reason(&conditions).as_deref() != Some("DeploymentPaused") {
            set_condition(
                &mut conditions,
                condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                ),
            );
        }
    } else if let Some(new) = new_index {
        if progressing_reason(&conditions).as_deref() == Some("DeploymentPaused") {
            set_condition(
                &mut conditions,
                condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                ),
            );
        }
        if let Some((reason, message)) = new_set_event {
            set_condition(
                &mut conditions,
                condition("Progressing", "True", reason, message),
            );
        }
        let set_name = &sets[new].name;
        let complete =
            updated == spec.replicas && replicas == spec.replicas && available == spec.replicas;
        let old_old_replicas = old_count("replicas") - old_count("updatedReplicas");
        let progressed = updated > old_count("updatedReplicas")
            || (replicas - updated) < old_old_replicas
            || ready > old_count("readyReplicas")
            || available > old_count("availableReplicas");
        if complete {
            set_condition(
                &mut conditions,
                condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{set_name}\" has successfully progressed."),
                ),
            );
        } else if progressed {
            // Progress refreshes lastUpdateTime even when the reason stays the same.
            let mut fresh = condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{set_name}\" is progressing."),
            );
            if let Some(current) = find_condition(&conditions, "Progressing")
                && current.get("status").and_then(Value::as_str) == Some("True")
            {
                fresh["lastTransitionTime"] = current["lastTransitionTime"].clone();
            }
            conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("Progressing"));
            conditions.push(fresh);
        }
        if !complete && let Some(deadline) = spec.progress_deadline {
            match progress_deadline_left(&conditions, deadline) {
                Some(left) if left.is_zero() => set_condition(
                    &mut conditions,
                    condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{set_name}\" has timed out progressing."),
                    ),
                ),
                Some(left) => wakeup = Some(now + left),
                None => {}
            }
        }
    }
    status.insert("conditions".into(), Value::Array(conditions));

    // Pods still starting wake the controller when they become ready (or available).
    for set in sets {
        for at in set.pods.iter().flatten() {
            for instant in [*at, *at + spec.min_ready] {
                if instant > now {
                    wakeup = Some(wakeup.map_or(instant, |w: Instant| w.min(instant)));
                }
            }
        }
    }
    ComputedStatus {
        value: Value::Object(status),
        wakeup,
    }
}

/// Time left before the Progressing condition times out: `None` when it cannot (no
/// condition, already complete or already timed out), zero when it has.
fn progress_deadline_left(conditions: &[Value], deadline_seconds: i64) -> Option<Duration> {
    let cond = find_condition(conditions, "Progressing")?;
    if matches!(
        cond.get("reason").and_then(Value::as_str),
        Some("NewReplicaSetAvailable" | "ProgressDeadlineExceeded")
    ) {
        return None;
    }
    let last_update = cond
        .get("lastUpdateTime")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())?
        .with_timezone(&chrono::Utc);
    let due = last_update + chrono::Duration::seconds(deadline_seconds);
    // Kubernetes times out strictly after the deadline; the slack keeps the timer from firing
    // just before it.
    Some(
        (due - chrono::Utc::now())
            .to_std()
            .map_or(Duration::ZERO, |left| left + Duration::from_millis(5)),
    )
}

fn find_condition<'a>(conditions: &'a [Value], type_: &str) -> Option<&'a Value> {
    conditions
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// Kubernetes' SetDeploymentCondition: no change when status and reason are unchanged; the
/// transition time is kept when only the reason changes.
fn set_condition(conditions: &mut Vec<Value>, mut new: Value) {
    let type_ = new["type"].as_str().unwrap_or_default().to_owned();
    if let Some(current) = find_condition(conditions, &type_) {
        if current.get("status") == new.get("status") && current.get("reason") == new.get("reason")
        {
            return;
        }
        if current.get("status") == new.get("status") {
            new["lastTransitionTime"] = current["lastTransitionTime"].clone();
        }
    }
    conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some(type_.as_str()));
    conditions.push(new);
}
