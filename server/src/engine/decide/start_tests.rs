//! Tests of the first state of a rollout, one situation per test.

use super::super::fixtures::*;
use super::*;
use crate::domain::{AnalysisSettings, EventKind, Phase, Rollout, RouteRef};
use crate::engine::StartRequest;

#[test]
fn a_start_is_pending_at_the_routed_weight_with_one_started_event() {
    let base = Rollout::test()
        .named("r9")
        .at_sequence(0)
        .with(|r| r.route = RouteRef::virtual_service("podinfo-vs"));
    let (state, events) = start(base, "abc".into(), 0, "routes".into()).record(t(0));
    assert_eq!(state.phase, Phase::Pending);
    assert_eq!(state.revision, "abc");
    assert_eq!(state.route_fingerprint.as_deref(), Some("routes"));
    assert_eq!(state.last_sequence, 1);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].sequence, 1);
    assert_eq!(events[0].kind, EventKind::Started);
    assert_eq!(
        events[0].message,
        "rollout of test/podinfo started: canary podinfo-canary via VirtualService podinfo-vs, 10% steps up to 100% every 1s, success rate >= 99%"
    );
    assert_eq!(state.message, events[0].message);
}

fn request() -> StartRequest {
    StartRequest {
        namespace: "test".into(),
        target: "podinfo".into(),
        images: [("app".to_owned(), "podinfo:3".to_owned())].into(),
        analysis: AnalysisSettings::test(),
        ..Default::default()
    }
}

#[test]
fn a_start_is_admitted_with_its_canary_named_after_the_target_by_default() {
    let (ga, canary) = (ga(), canary());
    let admitted = admit(&request(), None, Some(&ga), Some(&canary));
    assert_eq!(admitted, Ok(&canary));
    assert_eq!(canary_name(&request()), "podinfo-canary");
    let named = StartRequest {
        canary: "other".into(),
        ..request()
    };
    assert_eq!(canary_name(&named), "other");
}

#[test]
fn a_start_is_refused_for_a_busy_target_a_canary_named_like_it_missing_deployments_or_containers() {
    let (ga, canary) = (ga(), canary());
    let active = Rollout::test().in_phase(Phase::Progressing);
    let Err(NotAdmitted::AlreadyActive(why)) =
        admit(&request(), Some(&active), Some(&ga), Some(&canary))
    else {
        panic!("a second rollout of one target was admitted");
    };
    assert_eq!(
        why,
        "rollout r1 is already active for deployment test/podinfo (progressing)"
    );
    let itself = StartRequest {
        canary: "podinfo".into(),
        ..request()
    };
    assert_eq!(
        admit(&itself, None, Some(&ga), Some(&canary)),
        Err(NotAdmitted::Invalid(
            "canary must differ from target".into()
        ))
    );
    assert_eq!(
        admit(&request(), None, None, Some(&canary)),
        Err(NotAdmitted::NotFound(
            "deployment test/podinfo not found".into()
        ))
    );
    assert_eq!(
        admit(&request(), None, Some(&ga), None),
        Err(NotAdmitted::NotFound(
            "canary deployment test/podinfo-canary not found".into()
        ))
    );
    let sidecar = StartRequest {
        images: [("proxy".to_owned(), "envoy:1".to_owned())].into(),
        ..request()
    };
    assert_eq!(
        admit(&sidecar, None, Some(&ga), Some(&canary)),
        Err(NotAdmitted::Refused(
            "canary deployment test/podinfo-canary has no container named proxy (it has: app)"
                .into()
        ))
    );
}

#[test]
fn the_requested_rollout_carries_the_request_and_its_route() {
    let asked = StartRequest {
        request_id: "ci-42".into(),
        created_by: "alice".into(),
        canary_replicas: Some(2),
        ..request()
    };
    let r = requested(
        &asked,
        "id".into(),
        "podinfo-canary".into(),
        RouteRef::virtual_service("vs"),
        t(0),
    );
    assert_eq!(
        (r.id.as_str(), r.canary.as_str(), r.route.name.as_str()),
        ("id", "podinfo-canary", "vs")
    );
    assert_eq!(
        (r.request_id.as_str(), r.created_by.as_str()),
        ("ci-42", "alice")
    );
    assert_eq!(r.images, asked.images);
    assert_eq!(r.canary_replicas, Some(2));
    assert_eq!(r.phase, Phase::Pending);
}
