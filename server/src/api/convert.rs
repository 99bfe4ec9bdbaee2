//! Domain <-> proto conversion.

use std::time::Duration;

use chrono::{DateTime, Utc};
use steerer::v1 as pb;

use crate::domain::{AnalysisSettings, EventKind, Phase, Rollout, RolloutEvent};
use crate::engine::EngineError;

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
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
    }
}

pub fn analysis(s: &AnalysisSettings) -> pb::Analysis {
    pb::Analysis {
        step_weight: Some(s.step_weight),
        max_weight: Some(s.max_weight),
        interval: Some(duration(s.interval)),
        success_rate_threshold: Some(s.success_rate_threshold),
        max_failed_checks: Some(s.max_failed_checks),
        progress_deadline: Some(duration(s.progress_deadline)),
        min_request_rate: Some(s.min_request_rate),
    }
}

pub fn rollout(r: &Rollout) -> pb::Rollout {
    pb::Rollout {
        id: r.id.clone(),
        namespace: r.namespace.clone(),
        target: r.target.clone(),
        canary: r.canary.clone(),
        virtual_service: r.virtual_service.clone(),
        revision: r.revision.clone(),
        phase: phase(r.phase) as i32,
        canary_weight: r.canary_weight,
        failed_checks: r.failed_checks,
        analysis: Some(analysis(&r.analysis)),
        last_analysis: r.last_analysis.map(|a| pb::AnalysisResult {
            success_rate: a.sample.success_rate,
            request_rate: a.sample.request_rate,
            time: Some(timestamp(a.time)),
        }),
        message: r.message.clone(),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        finished_at: r.finished_at.map(timestamp),
        last_sequence: r.last_sequence,
        request_id: r.request_id.clone(),
        images: r.images.clone().into_iter().collect(),
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
    }
}

/// Maps engine errors to gRPC statuses.
pub fn status(e: EngineError) -> tonic::Status {
    match e {
        EngineError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
        EngineError::NotFound(m) => tonic::Status::not_found(m),
        EngineError::AlreadyExists(m) => tonic::Status::already_exists(m),
        EngineError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
        EngineError::Unavailable(m) => tonic::Status::unavailable(m),
        EngineError::Internal(m) => tonic::Status::internal(m),
    }
}
