//! Tests of how long a decision waits, one situation per test.

use std::time::Duration;

use super::fixtures::*;
use super::*;
use crate::domain::{Phase, Rollout};

#[test]
fn a_halt_on_workloads_waits_on_their_changes_but_never_past_the_deadline() {
    let state = Rollout::test()
        .prepared()
        .with(|r| r.analysis.interval = Duration::from_secs(10))
        .with(|r| r.halted_since = Some(t(0)));
    let mut o = Observation::test();
    o.canary.as_mut().unwrap().updated_replicas = 2;
    let d = decide(&state, &o, t(1));
    assert_eq!(d.wake, POLL);
    assert_eq!(d.watch, Some(WATCHED_POLL));
    // Two seconds before the progress deadline (10 s), the wait ends with it.
    let late = decide(&d.next, &o, t(8));
    assert_eq!(late.watch, Some(Duration::from_secs(2)));
    // An interval shorter than WATCHED_POLL bounds the wait.
    let short = Rollout::test()
        .prepared()
        .with(|r| r.analysis.interval = Duration::from_secs(2));
    assert_eq!(decide(&short, &o, t(1)).watch, Some(Duration::from_secs(2)));
}

#[test]
fn webhooks_approvals_and_actions_keep_the_poll() {
    let mut o = Observation::test();
    o.canary.as_mut().unwrap().updated_replicas = 2;
    let approval = Rollout::test()
        .prepared()
        .with(|r| r.analysis.interval = Duration::from_secs(10))
        .with(|r| r.analysis.require_approval = true);
    let d = decide(&approval, &o, t(1));
    assert_eq!((d.wake, d.watch), (POLL, None));
    // Preparing writes (images, replicas): the driver looks again on the poll.
    let unprepared = Rollout::test().with(|r| r.analysis.interval = Duration::from_secs(10));
    let mut scaled_down = Observation::test();
    scaled_down.canary.as_mut().unwrap().spec_replicas = 0;
    let d = decide(&unprepared, &scaled_down, t(1));
    assert!(!d.actions.is_empty());
    assert_eq!(d.watch, None);
    // A step waits for its interval, not for the objects.
    let ready = Rollout::test()
        .prepared()
        .with(|r| r.analysis.interval = Duration::from_secs(10));
    let d = decide(&ready, &Observation::test(), t(1));
    assert_eq!(d.next.phase, Phase::Progressing);
    assert_eq!(d.watch, None);
}
