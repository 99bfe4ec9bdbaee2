//! Domain <-> proto conversion.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use steerer::v1 as pb;

use crate::domain::{
    AnalysisSettings, BaselineMode, BaselineSettings, CheckKind, CheckOutcome, CheckResult,
    EventKind, MatchValue, Matched, Phase, RequestMatch, Rollout, RolloutEvent, RouteKind,
    Strategy, WebhookKind,
};
use crate::engine::EngineError;
use crate::router::RouterError;

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    SystemTime::from(t).into()
}

/// A duration as protobuf has it; one too long for it (never a validated setting) saturates.
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 999_999_999,
    })
}

pub fn phase(p: Phase) -> pb::Phase {
    match p {
        Phase::Pending => pb::Phase::Pending,
        Phase::Progressing => pb::Phase::Progressing,
        Phase::Paused => pb::Phase::Paused,
        Phase::Promoting => pb::Phase::Promoting,
        Phase::Succeeded => pb::Phase::Succeeded,
        Phase::RollingBack => pb::Phase::RollingBack,
        Phase::RolledBack => pb::Phase::RolledBack,
        Phase::Aborted => pb::Phase::Aborted,
        Phase::Failed => pb::Phase::Failed,
    }
}

pub fn event_type(k: EventKind) -> pb::EventType {
    match k {
        EventKind::Started => pb::EventType::Started,
        EventKind::Preparing => pb::EventType::Preparing,
        EventKind::WeightChanged => pb::EventType::WeightChanged,
        EventKind::CheckPassed => pb::EventType::CheckPassed,
        EventKind::CheckFailed => pb::EventType::CheckFailed,
        EventKind::CheckNoData => pb::EventType::CheckNoData,
        EventKind::Halted => pb::EventType::Halted,
        EventKind::Paused => pb::EventType::Paused,
        EventKind::Resumed => pb::EventType::Resumed,
        EventKind::Promoting => pb::EventType::Promoting,
        EventKind::Promoted => pb::EventType::Promoted,
        EventKind::RollingBack => pb::EventType::RollingBack,
        EventKind::RolledBack => pb::EventType::RolledBack,
        EventKind::Aborted => pb::EventType::Aborted,
        EventKind::Succeeded => pb::EventType::Succeeded,
        EventKind::Failed => pb::EventType::Failed,
        EventKind::Restarted => pb::EventType::Restarted,
        EventKind::Webhook => pb::EventType::Webhook,
    }
}

pub fn webhook_type(k: WebhookKind) -> pb::WebhookType {
    match k {
        WebhookKind::ConfirmRollout => pb::WebhookType::ConfirmRollout,
        WebhookKind::PreRollout => pb::WebhookType::PreRollout,
        WebhookKind::Rollout => pb::WebhookType::Rollout,
        WebhookKind::ConfirmPromotion => pb::WebhookType::ConfirmPromotion,
        WebhookKind::PostRollout => pb::WebhookType::PostRollout,
        WebhookKind::Rollback => pb::WebhookType::Rollback,
    }
}

pub fn check(c: &CheckResult) -> pb::CheckResult {
    pb::CheckResult {
        name: c.name.clone(),
        kind: match c.kind {
            CheckKind::SuccessRate => pb::CheckKind::SuccessRate,
            CheckKind::Latency => pb::CheckKind::Latency,
            CheckKind::Metric => pb::CheckKind::Metric,
            CheckKind::Webhook => pb::CheckKind::Webhook,
        } as i32,
        value: c.value,
        min: c.min,
        max: c.max,
        passed: c.outcome == CheckOutcome::Passed,
        detail: c.detail.clone(),
        baseline_value: c.baseline.as_ref().and_then(|b| b.value),
        p_value: c.baseline.as_ref().and_then(|b| b.p_value),
        effect: c.baseline.as_ref().and_then(|b| b.effect),
        effect_low: c.baseline.as_ref().and_then(|b| b.effect_low),
        effect_high: c.baseline.as_ref().and_then(|b| b.effect_high),
        query: c
            .baseline
            .as_ref()
            .map(|b| b.query.clone())
            .unwrap_or_default(),
    }
}

/// A rollout's baseline settings as the API says them.
pub fn baseline(b: &BaselineSettings) -> pb::Baseline {
    pb::Baseline {
        mode: match b.mode {
            BaselineMode::Ga => pb::BaselineMode::Ga,
            BaselineMode::Deployment => pb::BaselineMode::Deployment,
        } as i32,
        confidence: Some(b.confidence),
        max_error_rate_increase: Some(b.max_error_rate_increase),
        max_latency_increase: Some(b.max_latency_increase),
        min_requests: Some(b.min_requests),
    }
}

/// An A/B match as the API writes it.
fn request_match(m: &RequestMatch) -> pb::RequestMatch {
    let mut out = pb::RequestMatch::default();
    match &m.on {
        Matched::Header(name) => out.header = name.clone(),
        Matched::Cookie(name) => out.cookie = name.clone(),
    }
    match &m.value {
        MatchValue::Exact(v) => out.exact = v.clone(),
        MatchValue::Prefix(v) => out.prefix = v.clone(),
        MatchValue::Regex(v) => out.regex = v.clone(),
    }
    out
}

pub fn analysis(s: &AnalysisSettings) -> pb::Analysis {
    let (kind, weights, iterations) = match &s.strategy {
        Strategy::Canary {
            step_weight,
            max_weight,
        } => (
            pb::Strategy::Canary,
            Some((*step_weight, *max_weight)),
            None,
        ),
        Strategy::AbTest { iterations, .. } => (pb::Strategy::AbTest, None, Some(*iterations)),
        Strategy::BlueGreen { iterations } => (pb::Strategy::BlueGreen, None, Some(*iterations)),
    };
    pb::Analysis {
        step_weight: weights.map(|(step, _)| step),
        max_weight: weights.map(|(_, max)| max),
        interval: Some(duration(s.interval)),
        // With a baseline the threshold applies only when the request set it.
        success_rate_threshold: s
            .baseline
            .as_ref()
            .is_none_or(|b| b.success_rate_guard)
            .then_some(s.success_rate_threshold),
        max_failed_checks: Some(s.max_failed_checks),
        progress_deadline: Some(duration(s.progress_deadline)),
        min_request_rate: Some(s.min_request_rate),
        max_latency_p99_ms: s.max_latency_p99_ms,
        metrics: s
            .metrics
            .iter()
            .map(|m| pb::MetricCheck {
                template: m.template.clone(),
                min: m.min,
                max: m.max,
            })
            .collect(),
        webhooks: s
            .webhooks
            .iter()
            .map(|w| pb::Webhook {
                name: w.name.clone(),
                r#type: webhook_type(w.kind) as i32,
                url: w.url.clone(),
                timeout: Some(duration(w.timeout)),
                metadata: w.metadata.clone().into_iter().collect(),
            })
            .collect(),
        require_approval: s.require_approval,
        baseline: s.baseline.as_deref().map(baseline),
        strategy: kind as i32,
        iterations,
        r#match: s.strategy.matches().iter().map(request_match).collect(),
        mirror_weight: None,
        session_affinity: None,
    }
}

pub fn rollout(r: &Rollout) -> pb::Rollout {
    pb::Rollout {
        id: r.id.clone(),
        namespace: r.namespace.clone(),
        target: r.target.clone(),
        canary: r.canary.clone(),
        virtual_service: match r.route.kind {
            RouteKind::VirtualService => r.route.name.clone(),
            RouteKind::HttpRoute | RouteKind::GrpcRoute => String::new(),
        },
        route: Some(pb::RouteRef {
            kind: r.route.kind.name().to_owned(),
            name: r.route.name.clone(),
        }),
        revision: r.revision.clone(),
        phase: phase(r.phase) as i32,
        canary_weight: r.canary_weight,
        failed_checks: r.failed_checks,
        analysis: Some(analysis(&r.analysis)),
        last_analysis: r.last_analysis.as_ref().map(|a| pb::AnalysisResult {
            success_rate: a.sample.success_rate,
            request_rate: a.sample.request_rate,
            time: Some(timestamp(a.time)),
            latency_p99_ms: a.sample.latency_p99_ms,
            failed_metrics: a.failed_names(),
            checks: a.checks.iter().map(check).collect(),
        }),
        message: r.message.clone(),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        finished_at: r.finished_at.map(timestamp),
        last_sequence: r.last_sequence,
        request_id: r.request_id.clone(),
        images: r.images.clone().into_iter().collect(),
        created_by: r.created_by.clone(),
        observer: r.observer.clone(),
        waiting_for: r.gates.waiting_for.clone().unwrap_or_default(),
    }
}

pub fn event(e: &RolloutEvent) -> pb::RolloutEvent {
    pb::RolloutEvent {
        rollout_id: e.rollout_id.clone(),
        sequence: e.sequence,
        time: Some(timestamp(e.time)),
        r#type: event_type(e.kind) as i32,
        phase: phase(e.phase) as i32,
        canary_weight: e.canary_weight,
        success_rate: e.success_rate,
        request_rate: e.request_rate,
        failed_checks: e.failed_checks,
        message: e.message.clone(),
        latency_p99_ms: e.latency_p99_ms,
        failed_metrics: e.failed_names(),
        checks: e.checks.iter().map(check).collect(),
    }
}

/// Maps engine errors to gRPC statuses.
pub fn status(e: EngineError) -> tonic::Status {
    let message = e.to_string();
    match e {
        EngineError::InvalidRequest(_) => tonic::Status::invalid_argument(message),
        EngineError::NotFound(_) | EngineError::Route(RouterError::NotFound { .. }) => {
            tonic::Status::not_found(message)
        }
        EngineError::AlreadyActive(_) => tonic::Status::already_exists(message),
        EngineError::Refused(_)
        | EngineError::Route(
            RouterError::Topology(_)
            | RouterError::Unsupported { .. }
            | RouterError::Unserved { .. },
        ) => tonic::Status::failed_precondition(message),
        EngineError::Route(RouterError::Api { .. } | RouterError::Patch { .. })
        | EngineError::Store(_)
        | EngineError::MetricsUnreachable(_)
        | EngineError::Interrupted(_) => tonic::Status::unavailable(message),
        EngineError::NotLeader(_) => tonic::Status::unavailable(message),
        EngineError::Internal(_) => tonic::Status::internal(message),
    }
}
