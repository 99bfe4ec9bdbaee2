//! Tests of the webhook gates and approval, one situation per test.

use super::super::fixtures::*;
use super::super::*;
use super::*;
use crate::domain::{
    AnalysisRecord, Breaches, CheckOutcome, EventKind, Gates, Phase, Rollout, Sample, WebhookKind,
};

#[test]
fn a_rollback_webhook_saying_yes_rolls_back_at_once_and_anything_else_carries_on() {
    let state = Rollout::test()
        .progressing(30, 0)
        .with_hooks(&[("kill", WebhookKind::Rollback)]);
    let yes = Observation::test()
        .measured(100.0, 20.0)
        .answering(vec![answered("kill", WebhookKind::Rollback, 200)]);
    let d = decide(&state, &yes, t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(kinds(&d), vec![EventKind::RollingBack]);
    assert_eq!(
        d.next.ending.as_ref().unwrap().reason,
        "rollback webhook kill answered HTTP 200"
    );
    assert_eq!(d.events[0].checks[0].name, "kill");
    for carry_on in [
        answered("kill", WebhookKind::Rollback, 404),
        unanswered("kill", WebhookKind::Rollback, "timed out after 1s"),
    ] {
        let o = Observation::test()
            .measured(100.0, 20.0)
            .answering(vec![carry_on]);
        let d = decide(&state, &o, t(1));
        assert_eq!(
            kinds(&d),
            vec![EventKind::CheckPassed, EventKind::WeightChanged]
        );
    }
}

#[test]
fn check_webhooks_are_due_only_with_a_check_that_will_be_judged() {
    let state = Rollout::test().progressing(100, 0).with_hooks(&[
        ("smoke", WebhookKind::Rollout),
        ("kill", WebhookKind::Rollback),
        ("gate", WebhookKind::ConfirmPromotion),
        ("load", WebhookKind::PreRollout),
    ]);
    let due = hooks_due(&state, &Observation::test().windowed(), t(1), None);
    assert_eq!(
        due,
        [
            WebhookKind::Rollout,
            WebhookKind::Rollback,
            WebhookKind::ConfirmPromotion
        ]
    );
    // Before the interval, or while the canary rolls out, nothing is called.
    let early = t(0) + ms(400);
    assert!(hooks_due(&state, &Observation::test().windowed(), early, None).is_empty());
    let mut rolling = Observation::test().windowed();
    rolling.canary.as_mut().unwrap().updated_replicas = 1;
    assert!(hooks_due(&state, &rolling, t(1), None).is_empty());
    // Below the maximum weight, no confirm-promotion.
    let lower = state.clone().with(|r| r.canary_weight = 50);
    assert_eq!(
        hooks_due(&lower, &Observation::test().windowed(), t(1), None),
        [WebhookKind::Rollout, WebhookKind::Rollback]
    );
}

#[test]
fn a_start_waits_for_confirm_rollout_halted_before_preparing_the_canary() {
    let state = Rollout::test().awaiting_confirmation();
    let mut o = Observation::test();
    o.canary.as_mut().unwrap().spec_replicas = 0;
    let no = o.clone().answering(vec![
        answered("approve", WebhookKind::ConfirmRollout, 403),
        answered("kill", WebhookKind::Rollback, 404),
    ]);
    let d = decide(&state, &no, t(1));
    assert!(d.actions.is_empty(), "nothing prepared: {:?}", d.actions);
    assert!(!d.next.prepared);
    assert_eq!(kinds(&d), vec![EventKind::Halted]);
    assert_eq!(
        d.events[0].message,
        "halted: waiting for confirm-rollout webhook approve (HTTP 403)"
    );
    assert_eq!(
        d.next.gates.waiting_for.as_deref(),
        Some("confirm-rollout webhook approve (HTTP 403)")
    );
    // Between calls nothing is said again.
    let between = decide(&d.next, &o, t(2));
    assert!(between.events.is_empty() && between.actions.is_empty());
    // The gate is asked once an interval.
    assert_eq!(
        hooks_due(&d.next, &o, t(1) + ms(500), Some(t(1))),
        Vec::<WebhookKind>::new()
    );
    assert_eq!(
        hooks_due(&d.next, &o, t(2), Some(t(1))),
        [WebhookKind::ConfirmRollout, WebhookKind::Rollback]
    );
    let yes = o.clone().answering(vec![
        answered("approve", WebhookKind::ConfirmRollout, 200),
        answered("kill", WebhookKind::Rollback, 404),
    ]);
    let d = decide(&d.next, &yes, t(3));
    assert_eq!(kinds(&d), vec![EventKind::Webhook, EventKind::Preparing]);
    assert!(d.next.gates.rollout_confirmed);
    assert_eq!(d.next.gates.waiting_for, None);
    assert_eq!(d.actions, vec![Action::ScaleCanary(3)]);
    assert!(
        d.events[0]
            .message
            .contains("confirm-rollout: approve answered HTTP 200")
    );
    // Confirmed for good: never asked again.
    assert!(hooks_due(&d.next, &o, t(60), Some(t(3))).is_empty());
}

#[test]
fn waiting_for_confirm_rollout_is_bounded_by_the_progress_deadline_and_a_rollback_hook() {
    let waiting = Rollout::test().awaiting_confirmation().with(|r| {
        r.halted_since = Some(t(0));
        r.halt_reason = Some("waiting for confirm-rollout webhook approve".into());
    });
    let d = decide(&waiting, &Observation::test(), t(11));
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert!(d.next.ending.unwrap().reason.starts_with(
        "progress deadline of 10s exceeded: waiting for the confirm-rollout webhooks"
    ),);
    let killed = Observation::test().answering(vec![
        answered("approve", WebhookKind::ConfirmRollout, 403),
        answered("kill", WebhookKind::Rollback, 200),
    ]);
    let d = decide(&Rollout::test().awaiting_confirmation(), &killed, t(1));
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert_eq!(kinds(&d), vec![EventKind::RollingBack]);
}

#[test]
fn pre_rollout_runs_once_the_canary_is_ready_and_a_refusal_fails_a_check_at_weight_zero() {
    let state = Rollout::test().ready_with_load_test();
    assert_eq!(
        hooks_due(&state, &Observation::test(), t(1), None),
        [WebhookKind::PreRollout]
    );
    let mut rolling = Observation::test();
    rolling.canary.as_mut().unwrap().updated_replicas = 1;
    assert!(hooks_due(&state, &rolling, t(1), None).is_empty());

    let no = Observation::test().answering(vec![answered("load", WebhookKind::PreRollout, 500)]);
    let d = decide(&state, &no, t(1));
    assert!(d.actions.is_empty(), "no traffic moves: {:?}", d.actions);
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
    assert_eq!(d.next.phase, Phase::Pending);
    assert_eq!(d.next.failed_checks, 1);
    assert_eq!(
        d.events[0].message,
        "pre-rollout check failed: webhook load: HTTP 500, failed check 1 of 3"
    );
    assert_eq!(
        d.next.last_analysis.as_ref().unwrap().checks[0].name,
        "load"
    );
    // Tried again an interval later, not before.
    assert!(hooks_due(&d.next, &Observation::test(), t(1) + ms(500), None).is_empty());
    assert_eq!(
        hooks_due(&d.next, &Observation::test(), t(2), None),
        [WebhookKind::PreRollout]
    );
    let waiting = decide(&d.next, &Observation::test(), t(1) + ms(500));
    assert!(waiting.events.is_empty() && waiting.actions.is_empty());

    let yes = Observation::test().answering(vec![answered("load", WebhookKind::PreRollout, 200)]);
    let d = decide(&d.next, &yes, t(2));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::WeightChanged]
    );
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(10)]);
    assert!(d.next.gates.pre_rollout_passed);
    assert_eq!(d.next.phase, Phase::Progressing);
}

#[test]
fn pre_rollout_refused_max_failed_checks_times_rolls_back() {
    let state = Rollout::test()
        .ready_with_load_test()
        .with(|r| r.failed_checks = 2);
    let no = Observation::test().answering(vec![unanswered(
        "load",
        WebhookKind::PreRollout,
        "timed out after 1s",
    )]);
    let d = decide(&state, &no, t(1));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckFailed, EventKind::RollingBack]
    );
    assert_eq!(
        d.next.ending.unwrap().reason,
        "3 failed checks: pre-rollout webhook load: timed out after 1s"
    );
}

#[test]
fn confirm_promotion_holds_at_the_maximum_weight_until_it_says_yes() {
    let state = Rollout::test()
        .progressing(100, 0)
        .with_hooks(&[("gate", WebhookKind::ConfirmPromotion)]);
    let no = Observation::test()
        .measured(100.0, 20.0)
        .answering(vec![answered("gate", WebhookKind::ConfirmPromotion, 423)]);
    let d = decide(&state, &no, t(1));
    assert!(d.actions.is_empty());
    assert_eq!(kinds(&d), vec![EventKind::CheckPassed, EventKind::Halted]);
    assert_eq!(d.next.phase, Phase::Progressing);
    assert_eq!(
        d.next.message,
        "halted: waiting for confirm-promotion webhook gate (HTTP 423)"
    );
    // The next check says nothing new about the wait.
    let d = decide(&d.next, &no, t(2));
    assert_eq!(kinds(&d), vec![EventKind::CheckPassed]);
    let yes = Observation::test()
        .measured(100.0, 20.0)
        .answering(vec![answered("gate", WebhookKind::ConfirmPromotion, 200)]);
    let d = decide(&d.next, &yes, t(3));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::Promoting]
    );
    assert_eq!(d.next.gates.waiting_for, None);
    assert!(
        d.events[1]
            .message
            .contains("confirm-promotion said yes (gate answered HTTP 200)")
    );
}

#[test]
fn approval_holds_at_the_maximum_weight_while_checks_go_on_until_promote() {
    let state = Rollout::test().progressing(100, 0).with(|r| {
        r.analysis.require_approval = true;
        r.analysis.max_failed_checks = 2;
    });
    let d = decide(&state, &Observation::test().measured(100.0, 20.0), t(1));
    assert!(d.actions.is_empty());
    assert_eq!(kinds(&d), vec![EventKind::CheckPassed, EventKind::Halted]);
    assert_eq!(
        d.next.message,
        "halted: waiting for approval: call PromoteRollout"
    );
    assert_eq!(d.next.gates.waiting_for.as_deref(), Some(APPROVAL));
    // Still judged: failing checks count and roll back, approval or not.
    let held = d.next;
    let d = decide(&held, &Observation::test().measured(50.0, 20.0), t(2));
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
    assert_eq!(d.next.gates.waiting_for.as_deref(), Some(APPROVAL));
    let d = decide(&d.next, &Observation::test().measured(50.0, 20.0), t(3));
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert_eq!(d.next.gates.waiting_for, None);
    // PromoteRollout is the approval.
    let d = apply_command(&held, &Command::Promote, &Observation::test(), t(2)).unwrap();
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(d.next.gates.waiting_for, None);
}

#[test]
fn passing_checks_while_held_are_recorded_a_few_times_then_once_per_quiet_window() {
    let mut state = Rollout::test()
        .progressing(100, 0)
        .with(|r| r.analysis.require_approval = true);
    let mut recorded = Vec::new();
    for second in 1..=40 {
        let d = decide(
            &state,
            &Observation::test().measured(100.0, 20.0),
            t(second),
        );
        recorded.extend(
            d.events
                .iter()
                .filter(|e| e.kind == EventKind::CheckPassed)
                .map(|_| second),
        );
        assert_eq!(d.next.phase, Phase::Progressing);
        state = d.next;
    }
    // Three in full, then one a quiet window (a minute) after the last recorded.
    assert_eq!(recorded, [1, 2, 3]);
    let d = decide(&state, &Observation::test().measured(100.0, 20.0), t(63));
    assert_eq!(kinds(&d), vec![EventKind::CheckPassed]);
    assert!(
        d.events[0].message.contains("more passing checks since"),
        "{}",
        d.events[0].message
    );
    assert_eq!(
        d.next.message,
        "halted: waiting for approval: call PromoteRollout"
    );
}

#[test]
fn post_rollout_is_called_once_traffic_left_the_canary_and_the_rollout_ends_after() {
    let state = Rollout::test()
        .rolling_back(Some(0))
        .with_hooks(&[("notify", WebhookKind::PostRollout)]);
    assert_eq!(hook_phase(&state, WebhookKind::PostRollout), Phase::Aborted);
    assert_eq!(
        hooks_due(&state, &Observation::test().routing(0), t(1), None),
        [WebhookKind::PostRollout]
    );
    // Not called yet: the rollout does not end.
    let d = decide(&state, &Observation::test().routing(0), t(1));
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert!(d.events.is_empty());
    let failed = Observation::test().routing(0).answering(vec![answered(
        "notify",
        WebhookKind::PostRollout,
        500,
    )]);
    let d = decide(&state, &failed, t(1));
    assert_eq!(kinds(&d), vec![EventKind::Webhook, EventKind::Aborted]);
    assert!(
        d.events[0]
            .message
            .contains("post-rollout webhook notify (HTTP 500) failed; it is informational"),
        "{}",
        d.events[0].message
    );
    assert_eq!(d.events[0].checks[0].outcome, CheckOutcome::Failed);
    assert_eq!(d.next.phase, Phase::Aborted);
    assert!(d.next.gates.post_rollout_sent);
    assert!(hooks_due(&d.next, &Observation::test().routing(0), t(2), None).is_empty());
}

#[test]
fn post_rollout_after_a_promotion_names_the_success_and_leaves_the_message_alone() {
    let state = Rollout::test()
        .promoting()
        .with(|r| {
            r.traffic_off_canary_at = Some(t(0));
            r.message = "GA runs revision x; canary scaled down in 30s".into();
        })
        .with_hooks(&[("notify", WebhookKind::PostRollout)]);
    assert_eq!(
        hook_phase(&state, WebhookKind::PostRollout),
        Phase::Succeeded
    );
    let sent = Observation::test()
        .routing(0)
        .answering(vec![answered("notify", WebhookKind::PostRollout, 204)])
        .delayed();
    let d = decide(&state, &sent, t(1));
    assert_eq!(kinds(&d), vec![EventKind::Webhook]);
    assert_eq!(d.next.phase, Phase::Promoting, "waits out the delay");
    assert_eq!(d.next.message, state.message);
    assert_eq!(
        d.events[0].message,
        "post-rollout webhooks called: notify answered HTTP 204"
    );
}

#[test]
fn a_new_revision_passes_its_own_gates_again() {
    let state = Rollout::test().progressing(30, 0).with(|r| {
        r.gates = Gates {
            rollout_confirmed: true,
            pre_rollout_passed: true,
            post_rollout_sent: false,
            waiting_for: None,
        };
        r.revision = "old".into();
    });
    let d = decide(&state, &Observation::test(), t(1));
    assert_eq!(kinds(&d), vec![EventKind::Restarted]);
    assert_eq!(d.next.gates, Gates::default());
}

#[test]
fn state_stored_before_gates_and_breakdowns_existed_still_loads() {
    let state = Rollout::test().progressing(30, 0).with(|r| {
        r.last_analysis = Some(AnalysisRecord {
            sample: Sample::default(),
            time: t(0),
            failed: Breaches::default(),
            checks: Vec::new(),
        })
    });
    let stored = serde_json::to_value(&state).unwrap();
    assert!(stored.get("gates").is_some());
    let mut old = stored.clone();
    old.as_object_mut().unwrap().remove("gates");
    let loaded: Rollout = serde_json::from_value(old).unwrap();
    assert_eq!(loaded.gates, Gates::default());
    assert!(loaded.last_analysis.unwrap().checks.is_empty());
    // A settings record without webhooks, metrics or approval keeps none.
    assert!(stored["analysis"].get("webhooks").is_none());
    assert!(!loaded.analysis.require_approval);
}
