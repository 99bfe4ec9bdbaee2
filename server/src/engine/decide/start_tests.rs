//! Tests of the first state of a rollout, one situation per test.

use super::super::fixtures::*;
use super::*;
use crate::domain::{EventKind, Phase, Rollout};

#[test]
fn a_start_is_pending_at_the_routed_weight_with_one_started_event() {
    let base = Rollout::test()
        .named("r9")
        .at_sequence(0)
        .with(|r| r.virtual_service = "podinfo-vs".into());
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
