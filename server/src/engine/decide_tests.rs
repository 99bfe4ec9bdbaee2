//! The rules of `decide` and `apply_command`, one situation per test.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::domain::{AnalysisSettings, Ending, EventKind, Phase, Rollout, Sample};
use crate::domain::{DeploymentView, HpaView, RouteView, promoted_template, template_hash};
use crate::workloads::fake::FakeWorkloads;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn settings() -> AnalysisSettings {
    AnalysisSettings {
        step_weight: 10,
        max_weight: 100,
        interval: Duration::from_secs(1),
        success_rate_threshold: 99.0,
        max_failed_checks: 3,
        progress_deadline: Duration::from_secs(10),
        min_request_rate: 1.0,
        ..Default::default()
    }
}

fn ga() -> DeploymentView {
    FakeWorkloads::settled("test", "podinfo", 3, "podinfo:1")
}

fn canary() -> DeploymentView {
    FakeWorkloads::settled("test", "podinfo-canary", 3, "podinfo:2")
}

/// A rollout in a phase, built by chaining.
struct Fixture(Rollout);

impl Fixture {
    fn new() -> Self {
        let mut rollout = Rollout::new(
            "r1".into(),
            "test".into(),
            "podinfo".into(),
            "podinfo-canary".into(),
            "podinfo".into(),
            settings(),
            t(0),
        );
        rollout.last_sequence = 1;
        rollout.route_fingerprint = Some("routes".into());
        Fixture(rollout)
    }
    fn prepared(mut self) -> Self {
        self.0.prepared = true;
        self
    }
    fn progressing(mut self, weight: u32, last_step: i64) -> Self {
        self.0.prepared = true;
        self.0.phase = Phase::Progressing;
        self.0.revision = canary().revision();
        self.0.canary_weight = weight;
        self.0.last_step_at = Some(t(last_step));
        // The revision has had traffic for long enough that its checks are due.
        self.0.traffic_since = Some(t(-3600));
        self
    }
    fn with(mut self, f: impl FnOnce(&mut Rollout)) -> Self {
        f(&mut self.0);
        self
    }
    fn done(self) -> Rollout {
        self.0
    }
}

fn obs() -> Observation {
    Observation {
        ga: Some(ga()),
        canary: Some(canary()),
        ..Default::default()
    }
}

fn measured(success: f64, rate: f64) -> Observation {
    Observation {
        sample: Some(Ok(Sample {
            success_rate: Some(success),
            request_rate: Some(rate),
            latency_p99_ms: None,
        })),
        ..obs()
    }
}

/// The VirtualService routing `weight` percent to the canary, its routes as the fixture has them.
fn routed(weight: u32) -> RouteView {
    RouteView::Split {
        canary_weight: weight,
        fingerprint: "routes".into(),
    }
}

/// `o` with the VirtualService routing `weight` percent to the canary.
fn at(weight: u32, o: Observation) -> Observation {
    Observation {
        route: routed(weight),
        ..o
    }
}

fn kinds(d: &Decision) -> Vec<EventKind> {
    d.events.iter().map(|e| e.kind).collect()
}

#[test]
fn preparing_scales_a_canary_at_zero_to_ga_replicas_and_applies_images() {
    let state = Fixture::new()
        .with(|r| {
            r.images = BTreeMap::from([("app".to_owned(), "podinfo:3".to_owned())]);
        })
        .done();
    let mut o = obs();
    o.canary.as_mut().unwrap().spec_replicas = 0;
    let d = decide(&state, &o, t(1));
    assert_eq!(d.actions, vec![Action::ApplyImages, Action::ScaleCanary(3)]);
    assert_eq!(kinds(&d), vec![EventKind::Preparing]);
    assert!(d.next.prepared);
    assert_eq!(d.next.phase, Phase::Pending);
}

#[test]
fn preparing_uses_requested_canary_replicas() {
    let state = Fixture::new().with(|r| r.canary_replicas = Some(1)).done();
    let mut o = obs();
    o.canary.as_mut().unwrap().spec_replicas = 0;
    let d = decide(&state, &o, t(1));
    assert_eq!(d.actions, vec![Action::ScaleCanary(1)]);
}

#[test]
fn pending_halts_while_the_canary_rolls_out() {
    let state = Fixture::new().prepared().done();
    let mut o = obs();
    o.canary.as_mut().unwrap().updated_replicas = 2;
    let d = decide(&state, &o, t(1));
    assert!(d.actions.is_empty());
    assert_eq!(kinds(&d), vec![EventKind::Halted]);
    assert_eq!(
        d.events[0].message,
        "halted: canary rolling update in progress, 2 of 3 replicas updated"
    );
    // The same reason is not announced twice.
    let again = decide(&d.next, &o, t(2));
    assert!(again.events.is_empty());
}

#[test]
fn ready_canary_gets_the_first_step() {
    let state = Fixture::new().prepared().done();
    let d = decide(&state, &obs(), t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(10)]);
    assert_eq!(d.next.phase, Phase::Progressing);
    assert_eq!(d.next.revision, canary().revision());
    assert_eq!(kinds(&d), vec![EventKind::WeightChanged]);
    assert_eq!(d.events[0].canary_weight, 10);
}

#[test]
fn nothing_happens_before_the_interval_elapses() {
    let state = Fixture::new().progressing(10, 0).done();
    let now = t(0) + chrono::Duration::milliseconds(400);
    assert_eq!(
        sample_window(&state, now, Duration::from_secs(4), Duration::ZERO),
        None
    );
    let d = decide(&state, &obs(), now);
    assert!(d.actions.is_empty() && d.events.is_empty());
    assert_eq!(d.wake, Duration::from_millis(600));
}

#[test]
fn passing_check_steps_up_by_step_weight() {
    let state = Fixture::new().progressing(10, 0).done();
    assert_eq!(
        sample_window(&state, t(1), Duration::from_secs(4), Duration::ZERO),
        Some(Duration::from_secs(4))
    );
    let d = decide(&state, &measured(100.0, 20.0), t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(20)]);
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::WeightChanged]
    );
    assert_eq!(d.events[0].canary_weight, 10);
    assert_eq!(d.events[1].canary_weight, 20);
    assert_eq!(d.next.last_step_at, Some(t(1)));
}

#[test]
fn the_last_step_stops_at_max_weight() {
    let state = Fixture::new()
        .progressing(40, 0)
        .with(|r| {
            r.analysis.step_weight = 25;
            r.analysis.max_weight = 50;
        })
        .done();
    let d = decide(&state, &measured(100.0, 20.0), t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(50)]);
}

#[test]
fn passing_check_at_max_weight_promotes() {
    let state = Fixture::new().progressing(100, 0).done();
    let d = decide(&state, &measured(99.5, 20.0), t(1));
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(d.actions, vec![Action::PromoteTemplate]);
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::Promoting]
    );
    assert_eq!(d.next.promotion_min_ready, Some(3));
}

fn timed(success: f64, p99: Option<f64>) -> Observation {
    Observation {
        sample: Some(Ok(Sample {
            success_rate: Some(success),
            request_rate: Some(20.0),
            latency_p99_ms: p99,
        })),
        ..obs()
    }
}

fn with_ceiling(r: &mut Rollout) {
    r.analysis.max_latency_p99_ms = Some(200.0);
}

#[test]
fn a_slow_canary_fails_its_check_on_latency_and_the_record_and_event_say_so() {
    let state = Fixture::new()
        .progressing(30, 0)
        .with(with_ceiling)
        .with(|r| r.failed_checks = 2)
        .done();
    let d = decide(&state, &timed(100.0, Some(936.0)), t(1));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckFailed, EventKind::RollingBack]
    );
    let failed = Breaches {
        success_rate: false,
        latency_p99: true,
    };
    let record = d.next.last_analysis.unwrap();
    assert_eq!(record.failed, failed);
    assert_eq!(record.sample.latency_p99_ms, Some(936.0));
    let event = d.events[0].clone().record("r1", 2, t(1));
    assert_eq!(event.failed, failed);
    assert_eq!(event.latency_p99_ms, Some(936.0));
    assert!(
        event
            .message
            .contains("p99 latency 936.0ms above ceiling 200ms, success rate 100.00% meets 99%"),
        "{}",
        event.message
    );
    assert!(
        d.next
            .ending
            .unwrap()
            .reason
            .contains("p99 latency 936.0ms above ceiling 200ms")
    );
}

#[test]
fn a_fast_canary_passes_with_its_latency_in_the_event() {
    let state = Fixture::new().progressing(30, 0).with(with_ceiling).done();
    let d = decide(&state, &timed(100.0, Some(47.0)), t(1));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::WeightChanged]
    );
    assert!(
        d.events[0]
            .message
            .contains("p99 latency 47.0ms within 200ms")
    );
    assert_eq!(d.events[0].sample.unwrap().latency_p99_ms, Some(47.0));
    assert_eq!(d.next.last_analysis.unwrap().failed, Breaches::default());
}

#[test]
fn a_canary_without_latency_data_is_not_passed() {
    let state = Fixture::new().progressing(30, 0).with(with_ceiling).done();
    let d = decide(&state, &timed(100.0, None), t(1));
    assert_eq!(kinds(&d), vec![EventKind::CheckNoData]);
    assert_eq!(d.next.canary_weight, 30);
    assert_eq!(d.next.failed_checks, 0);
}

#[test]
fn failed_checks_count_up_then_roll_back_with_one_weight_write() {
    let state = Fixture::new().progressing(30, 0).done();
    let d = decide(&state, &measured(80.0, 20.0), t(1));
    assert!(d.actions.is_empty());
    assert_eq!(d.next.failed_checks, 1);
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
    assert!(d.events[0].message.contains("80.00% below threshold 99%"));

    let state = Fixture::new()
        .progressing(30, 0)
        .with(|r| r.failed_checks = 2)
        .done();
    let d = decide(&state, &measured(80.0, 20.0), t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert_eq!(d.next.canary_weight, 0);
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckFailed, EventKind::RollingBack]
    );
    assert_eq!(d.next.ending.as_ref().unwrap().phase, Phase::RolledBack);
}

#[test]
fn too_little_traffic_is_no_data_never_a_pass() {
    let state = Fixture::new().progressing(10, 0).done();
    let d = decide(&state, &measured(100.0, 0.5), t(1));
    assert!(d.actions.is_empty());
    assert_eq!(kinds(&d), vec![EventKind::CheckNoData]);
    assert_eq!(d.next.canary_weight, 10);
    assert_eq!(d.next.failed_checks, 0);
    assert_eq!(d.next.halted_since, Some(t(1)));
}

#[test]
fn nan_inf_and_missing_values_are_no_data() {
    let state = Fixture::new().progressing(10, 0).done();
    for sample in [
        Sample {
            success_rate: Some(f64::NAN),
            request_rate: Some(10.0),
            latency_p99_ms: None,
        },
        Sample {
            success_rate: Some(f64::INFINITY),
            request_rate: Some(10.0),
            latency_p99_ms: None,
        },
        Sample {
            success_rate: Some(100.0),
            request_rate: Some(f64::NAN),
            latency_p99_ms: None,
        },
        Sample::default(),
    ] {
        let o = Observation {
            sample: Some(Ok(sample)),
            ..obs()
        };
        let d = decide(&state, &o, t(1));
        assert_eq!(kinds(&d), vec![EventKind::CheckNoData], "{sample:?}");
        assert!(d.actions.is_empty());
    }
    let o = Observation {
        sample: Some(Err("timeout".into())),
        ..obs()
    };
    assert_eq!(
        kinds(&decide(&state, &o, t(1))),
        vec![EventKind::CheckNoData]
    );
}

#[test]
fn out_of_range_success_rate_fails_the_check() {
    let state = Fixture::new().progressing(10, 0).done();
    let d = decide(&state, &measured(150.0, 10.0), t(1));
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
}

#[test]
fn no_data_past_the_deadline_rolls_back() {
    let state = Fixture::new()
        .progressing(10, 0)
        .with(|r| r.halted_since = Some(t(-20)))
        .done();
    let d = decide(&state, &measured(100.0, 0.0), t(1));
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
}

#[test]
fn halted_past_the_progress_deadline_rolls_back() {
    let state = Fixture::new()
        .prepared()
        .with(|r| r.halted_since = Some(t(0)))
        .done();
    let mut o = obs();
    o.canary.as_mut().unwrap().ready_replicas = 0;
    o.canary.as_mut().unwrap().available_replicas = 0;
    let d = decide(&state, &o, t(5));
    assert_eq!(d.next.phase, Phase::Pending);
    let d = decide(&state, &o, t(10));
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert!(
        d.events[0].message.contains(
            "progress deadline of 10s exceeded: canary has unhealthy pods, 0 of 3 replicas ready"
        ),
        "{}",
        d.events[0].message
    );
}

#[test]
fn hpa_scaling_the_canary_halts_the_rollout() {
    let state = Fixture::new().progressing(20, 0).done();
    let mut o = measured(100.0, 10.0);
    o.canary_hpa = Some(HpaView {
        name: "podinfo-canary".into(),
        target: "podinfo-canary".into(),
        current_replicas: 3,
        desired_replicas: 5,
        max_replicas: 10,
        ..Default::default()
    });
    let d = decide(&state, &o, t(1));
    assert!(d.actions.is_empty());
    assert_eq!(kinds(&d), vec![EventKind::Halted]);
    assert!(
        d.events[0]
            .message
            .contains("HPA podinfo-canary is scaling the canary from 3 to 5")
    );
}

#[test]
fn a_new_canary_revision_restarts_from_weight_zero() {
    let state = Fixture::new()
        .progressing(40, 0)
        .with(|r| r.failed_checks = 1)
        .done();
    let mut o = measured(100.0, 10.0);
    std::sync::Arc::make_mut(&mut o.canary.as_mut().unwrap().template)["spec"]["containers"][0]["image"] =
        json!("podinfo:9");
    let d = decide(&state, &o, t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(kinds(&d), vec![EventKind::Restarted]);
    assert_eq!(d.next.phase, Phase::Pending);
    assert_eq!((d.next.canary_weight, d.next.failed_checks), (0, 0));
}

fn promoted_ga() -> DeploymentView {
    let mut g = ga();
    let c = canary();
    g.template = promoted_template(&c.template, &c.selector, &g.selector).into();
    g
}

#[test]
fn promotion_waits_for_ga_then_routes_to_ga_and_scales_the_canary_down() {
    let state = Fixture::new()
        .progressing(100, 0)
        .with(|r| {
            r.phase = Phase::Promoting;
            r.promotion_min_ready = Some(3);
        })
        .done();
    // GA not yet updated: copy the template (again: idempotent).
    let d = decide(&state, &obs(), t(1));
    assert_eq!(d.actions, vec![Action::PromoteTemplate]);

    // GA updated but rolling.
    let mut o = Observation {
        ga: Some(promoted_ga()),
        ga_runs_canary: true,
        ..obs()
    };
    o.ga.as_mut().unwrap().updated_replicas = 1;
    let d = decide(&state, &o, t(2));
    assert!(d.actions.is_empty());
    assert!(d.next.message.contains("waiting for GA"));

    // GA ready: one weight write, all traffic on GA.
    let o = at(
        100,
        Observation {
            ga: Some(promoted_ga()),
            ga_runs_canary: true,
            ..obs()
        },
    );
    let d = decide(&state, &o, t(3));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(kinds(&d), vec![EventKind::Promoted]);
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(d.next.traffic_off_canary_at, Some(t(3)));

    // Then (no scale-down delay here) the canary goes to zero and the rollout succeeds.
    let d = decide(&d.next, &at(0, o), t(3));
    assert_eq!(d.actions, vec![Action::ScaleCanary(0)]);
    assert_eq!(kinds(&d), vec![EventKind::Succeeded]);
    assert_eq!(d.next.phase, Phase::Succeeded);
    assert_eq!(d.next.finished_at, Some(t(3)));
}

#[test]
fn promotion_never_routes_to_a_ga_smaller_than_the_canary() {
    let state = Fixture::new()
        .progressing(100, 0)
        .with(|r| {
            r.phase = Phase::Promoting;
            r.promotion_min_ready = Some(3);
        })
        .done();
    let mut small = promoted_ga();
    for n in [
        &mut small.spec_replicas,
        &mut small.status_replicas,
        &mut small.updated_replicas,
        &mut small.ready_replicas,
        &mut small.available_replicas,
    ] {
        *n = 1;
    }
    let o = Observation {
        ga: Some(small),
        ga_runs_canary: true,
        ..obs()
    };
    let d = decide(&state, &o, t(1));
    assert_eq!(d.actions, vec![Action::ScaleGa(3)]);
    assert_eq!(d.next.phase, Phase::Promoting);
}

#[test]
fn a_promotion_stored_without_its_template_restarts_for_a_changed_canary() {
    let state = Fixture::new()
        .progressing(100, 0)
        .with(|r| r.phase = Phase::Promoting)
        .done();
    let mut o = obs();
    std::sync::Arc::make_mut(&mut o.canary.as_mut().unwrap().template)["spec"]["containers"][0]["image"] =
        json!("podinfo:9");
    let d = decide(&state, &o, t(1));
    assert_eq!(kinds(&d), vec![EventKind::Restarted]);
    assert!(!d.actions.contains(&Action::PromoteTemplate));
}

#[test]
fn starting_a_promotion_records_the_template_ga_gets() {
    let state = Fixture::new().progressing(100, 0).done();
    let d = decide(&state, &at(100, measured(100.0, 10.0)), t(1));
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(
        d.next.promoted_template,
        Some(template_hash(&promoted_ga().template))
    );
}

#[test]
fn once_ga_has_the_promoted_template_a_changed_canary_never_restarts_or_reaches_ga() {
    let state = Fixture::new()
        .progressing(100, 0)
        .with(|r| {
            r.phase = Phase::Promoting;
            r.promotion_min_ready = Some(3);
            r.promoted_template = Some(template_hash(&promoted_ga().template));
        })
        .done();
    let mut changed = at(100, obs());
    std::sync::Arc::make_mut(&mut changed.canary.as_mut().unwrap().template)["spec"]["containers"]
        [0]["image"] = json!("podinfo:9");
    // GA does not show the promoted template yet: wait, never copy the new revision.
    let d = decide(&state, &changed, t(1));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.next.phase, Phase::Promoting);
    assert!(d.next.message.contains("moved on"), "{}", d.next.message);
    // GA runs the promoted revision: the promotion finishes as usual.
    changed.ga = Some(promoted_ga());
    let d = decide(&state, &changed, t(2));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(kinds(&d), vec![EventKind::Promoted]);
    let done = decide(&d.next, &at(0, changed), t(2));
    assert_eq!(done.next.phase, Phase::Succeeded);
    assert!(
        done.events[0].message.contains("did not analyse"),
        "{}",
        done.events[0].message
    );
}

#[test]
fn rolling_back_scales_the_canary_down_and_ends_with_the_reason() {
    let state = Fixture::new()
        .progressing(0, 0)
        .with(|r| {
            r.phase = Phase::RollingBack;
            r.ending = Some(Ending {
                phase: Phase::RolledBack,
                reason: "3 failed checks: x".into(),
            });
        })
        .done();
    let d = decide(&state, &at(0, obs()), t(1));
    assert_eq!(d.actions, vec![Action::ScaleCanary(0)]);
    assert_eq!(d.next.phase, Phase::RolledBack);
    assert_eq!(kinds(&d), vec![EventKind::RolledBack]);
    assert!(
        d.events[0]
            .message
            .starts_with("rolled back: 3 failed checks: x")
    );
}

#[test]
fn deciding_twice_on_the_same_state_gives_the_same_absolute_weight() {
    let state = Fixture::new().progressing(20, 0).done();
    let a = decide(&state, &measured(100.0, 10.0), t(1));
    let b = decide(&state, &measured(100.0, 10.0), t(1));
    assert_eq!(a.actions, b.actions);
    assert_eq!(a.actions, vec![Action::SetCanaryWeight(30)]);
}

#[test]
fn missing_canary_fails_the_rollout_with_traffic_on_ga() {
    let state = Fixture::new().progressing(20, 0).done();
    let o = Observation {
        canary: None,
        ..obs()
    };
    let d = decide(&state, &o, t(1));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.phase, Phase::Failed);
    assert!(
        d.events[0]
            .message
            .contains("test/podinfo-canary no longer exists")
    );
}

#[test]
fn abort_routes_to_ga_and_aborting_a_finished_rollout_changes_nothing() {
    let state = Fixture::new().progressing(30, 0).done();
    let d = apply_command(
        &state,
        &Command::Abort {
            reason: "bad deploy".into(),
        },
        &obs(),
        t(1),
    )
    .unwrap();
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.phase, Phase::RollingBack);
    let finished = decide(&d.next, &at(0, obs()), t(2));
    assert_eq!(finished.next.phase, Phase::Aborted);
    assert!(
        finished.events[0]
            .message
            .starts_with("aborted: bad deploy")
    );

    let d = apply_command(
        &finished.next,
        &Command::Abort {
            reason: String::new(),
        },
        &obs(),
        t(3),
    )
    .unwrap();
    assert!(d.actions.is_empty() && d.events.is_empty());
    assert!(!d.changes(&finished.next));
}

#[test]
fn abort_during_a_rollback_changes_nothing() {
    let state = Fixture::new()
        .progressing(0, 0)
        .with(|r| {
            r.phase = Phase::RollingBack;
            r.ending = Some(Ending {
                phase: Phase::RolledBack,
                reason: "3 failed checks: x".into(),
            });
        })
        .done();
    let d = apply_command(
        &state,
        &Command::Abort {
            reason: "stop".into(),
        },
        &obs(),
        t(1),
    )
    .unwrap();
    assert!(d.actions.is_empty() && d.events.is_empty());
    assert!(!d.changes(&state));
    // The rollback still ends as the rollback it was.
    let finished = decide(&d.next, &at(0, obs()), t(2));
    assert_eq!(finished.next.phase, Phase::RolledBack);
}

#[test]
fn pause_holds_and_resume_continues_from_the_same_weight() {
    let state = Fixture::new().progressing(30, 0).done();
    let paused = apply_command(
        &state,
        &Command::Pause {
            reason: String::new(),
        },
        &obs(),
        t(1),
    )
    .unwrap();
    assert_eq!(paused.next.phase, Phase::Paused);
    assert!(paused.actions.is_empty());
    // Paused: nothing moves however long it waits.
    let idle = decide(&paused.next, &measured(100.0, 10.0), t(100));
    assert!(idle.actions.is_empty() && idle.events.is_empty());
    let resumed = apply_command(&paused.next, &Command::Resume, &obs(), t(101)).unwrap();
    assert_eq!(resumed.next.phase, Phase::Progressing);
    assert_eq!(resumed.next.canary_weight, 30);
    assert_eq!(kinds(&resumed), vec![EventKind::Resumed]);
}

#[test]
fn promote_skips_the_remaining_analysis() {
    let state = Fixture::new().progressing(30, 0).done();
    let d = apply_command(&state, &Command::Promote, &obs(), t(1)).unwrap();
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(d.actions, vec![Action::PromoteTemplate]);
}

#[test]
fn promote_before_the_canary_is_ready_is_refused() {
    let state = Fixture::new().done();
    assert!(apply_command(&state, &Command::Promote, &obs(), t(1)).is_err());
    let done = Fixture::new().with(|r| r.phase = Phase::Succeeded).done();
    assert!(
        apply_command(
            &done,
            &Command::Pause {
                reason: String::new()
            },
            &obs(),
            t(1)
        )
        .is_err()
    );
    assert!(apply_command(&done, &Command::Resume, &obs(), t(1)).is_err());
}

#[test]
fn ga_template_hash_matches_after_promotion() {
    let g = promoted_ga();
    let c = canary();
    assert_eq!(
        template_hash(&promoted_template(&c.template, &c.selector, &g.selector)),
        template_hash(&g.template)
    );
}

#[test]
fn promotion_past_the_deadline_fails_and_leaves_traffic_where_it_is() {
    let state = Fixture::new()
        .progressing(40, 0)
        .with(|r| {
            r.phase = Phase::Promoting;
            r.promotion_min_ready = Some(3);
            r.promoting_since = Some(t(0));
        })
        .done();
    let mut o = Observation {
        ga: Some(promoted_ga()),
        ga_runs_canary: true,
        ..obs()
    };
    // GA's new pods never become ready.
    o.ga.as_mut().unwrap().updated_replicas = 1;
    let waiting = decide(&state, &o, t(9));
    assert_eq!(waiting.next.phase, Phase::Promoting);
    assert!(waiting.events.is_empty());

    let d = decide(&state, &o, t(10));
    assert_eq!(d.next.phase, Phase::Failed);
    assert!(
        d.actions.is_empty(),
        "no weight write, no scaling: {:?}",
        d.actions
    );
    assert_eq!(d.next.canary_weight, 40);
    assert_eq!(d.next.finished_at, Some(t(10)));
    assert_eq!(kinds(&d), vec![EventKind::Failed]);
    let message = &d.events[0].message;
    assert!(message.contains("progress deadline"), "{message}");
    assert!(message.contains("40% on the canary"), "{message}");
    assert!(message.contains("rolling update"), "{message}");
}

#[test]
fn promotion_that_cannot_copy_the_template_fails_at_the_deadline_too() {
    let state = Fixture::new()
        .progressing(100, 0)
        .with(|r| {
            r.phase = Phase::Promoting;
            r.promoting_since = Some(t(0));
        })
        .done();
    assert_eq!(
        decide(&state, &obs(), t(5)).actions,
        vec![Action::PromoteTemplate]
    );
    let d = decide(&state, &obs(), t(11));
    assert!(d.actions.is_empty());
    assert_eq!(d.next.phase, Phase::Failed);
}

#[test]
fn a_promotion_restored_without_a_start_time_gets_a_whole_deadline() {
    let state = Fixture::new()
        .progressing(100, 0)
        .with(|r| r.phase = Phase::Promoting)
        .done();
    let mut o = Observation {
        ga: Some(promoted_ga()),
        ga_runs_canary: true,
        ..obs()
    };
    o.ga.as_mut().unwrap().updated_replicas = 1;
    let d = decide(&state, &o, t(1000));
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(d.next.promoting_since, Some(t(1000)));
}

#[test]
fn passing_at_max_weight_starts_the_promotion_clock() {
    let state = Fixture::new().progressing(100, 0).done();
    let d = decide(&state, &measured(100.0, 10.0), t(1));
    assert_eq!(d.next.promoting_since, Some(t(1)));
}

/// Runs `decide` once a second from `from` with too little traffic, carrying the state on.
fn quiet_run(mut state: Rollout, from: i64, to: i64) -> (Rollout, Vec<EventDraft>) {
    let mut events = Vec::new();
    for second in from..=to {
        let d = decide(&state, &measured(100.0, 0.1), t(second));
        events.extend(d.events.iter().cloned());
        state = d.next;
    }
    (state, events)
}

#[test]
fn repeated_no_data_is_recorded_a_few_times_then_once_per_quiet_window() {
    let state = Fixture::new()
        .progressing(10, 0)
        .with(|r| r.analysis.progress_deadline = Duration::from_secs(3600))
        .done();
    let window = quiet_window(&state).as_secs() as i64;
    assert_eq!(window, 60);
    let (state, events) = quiet_run(state, 1, 10);
    assert_eq!(events.len(), REPEATS_IN_FULL as usize);
    assert!(events.iter().all(|e| e.kind == EventKind::CheckNoData));
    let quiet = state.quiet.clone().unwrap();
    assert_eq!((quiet.in_a_row, quiet.unrecorded), (10, 7));
    assert!(
        state.message.contains("10 checks in a row"),
        "{}",
        state.message
    );
    // Every check still moves the state on (persisted, but no event).
    assert_eq!(state.last_step_at, Some(t(10)));

    let (state, events) = quiet_run(state, 11, 3 + window);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].message.contains("more checks like this since"),
        "{}",
        events[0].message
    );
    assert_eq!(state.quiet.as_ref().unwrap().unrecorded, 0);

    // Evidence ends the quiet spell.
    let d = decide(&state, &measured(100.0, 10.0), t(4 + window));
    assert_eq!(d.next.quiet, None);
}

#[test]
fn a_different_no_data_reason_is_recorded_at_once() {
    let state = Fixture::new()
        .progressing(10, 0)
        .with(|r| r.analysis.progress_deadline = Duration::from_secs(3600))
        .done();
    let (state, _) = quiet_run(state, 1, 10);
    let o = Observation {
        sample: Some(Err("timeout".into())),
        ..obs()
    };
    let d = decide(&state, &o, t(11));
    assert_eq!(kinds(&d), vec![EventKind::CheckNoData]);
    assert!(d.events[0].message.contains("metrics unavailable"));
}

#[test]
fn quiet_no_data_still_rolls_back_at_the_deadline_with_an_event() {
    let state = Fixture::new().progressing(10, 0).done();
    // Deadline 10 s: checks 1..=9 are quiet after the third, the tenth rolls back.
    let (state, events) = quiet_run(state, 1, 9);
    assert_eq!(events.len(), REPEATS_IN_FULL as usize);
    let d = decide(&state, &measured(100.0, 0.1), t(11));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckNoData, EventKind::RollingBack]
    );
}

/// The minimum metrics window of the evidence tests.
const WINDOW: Duration = Duration::from_secs(4);

fn windowed(mut o: Observation) -> Observation {
    o.metrics_window = WINDOW;
    o
}

fn ms(millis: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(millis)
}

#[test]
fn the_first_step_of_a_revision_records_when_it_got_traffic() {
    let state = Fixture::new().prepared().done();
    let d = decide(&state, &windowed(obs()), t(7));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(10)]);
    assert_eq!(d.next.traffic_since, Some(t(7)));
    // Later steps of the same revision keep it.
    let next = decide(&d.next, &windowed(measured(100.0, 20.0)), t(12));
    assert_eq!(next.actions, vec![Action::SetCanaryWeight(20)]);
    assert_eq!(next.next.traffic_since, Some(t(7)));
}

#[test]
fn no_check_is_due_before_the_revision_has_had_one_metrics_window_of_traffic() {
    let state = Fixture::new()
        .progressing(20, 0)
        .with(|r| r.traffic_since = Some(t(0)))
        .done();
    let now = t(1) + ms(500);
    assert_eq!(sample_window(&state, now, WINDOW, Duration::ZERO), None);
    let d = decide(&state, &windowed(obs()), now);
    assert!(
        d.actions.is_empty() && d.events.is_empty(),
        "{:?}",
        d.events
    );
    assert!(!d.changes(&state), "waiting writes nothing");
    // Waiting for evidence is not a halt: the progress deadline does not run.
    assert_eq!(d.next.halted_since, None);
    assert_eq!(d.next.failed_checks, 0);
    // Looked at again after an interval (1 s): the health gate still applies.
    assert_eq!(d.wake, Duration::from_secs(1));
    let mut rolling = windowed(obs());
    rolling.canary.as_mut().unwrap().updated_replicas = 1;
    let halted = decide(&state, &rolling, now);
    assert_eq!(kinds(&halted), vec![EventKind::Halted]);

    // Far past the progress deadline (10 s) yet still within the window of a longer
    // metrics window: still just waiting.
    let long = Duration::from_secs(60);
    let o = Observation {
        metrics_window: long,
        ..obs()
    };
    let d = decide(&state, &o, t(30));
    assert!(d.events.is_empty() && d.actions.is_empty());
    assert_eq!(d.next.phase, Phase::Progressing);
    assert_eq!(d.next.halted_since, None);
}

#[test]
fn the_first_check_measures_only_the_revisions_own_traffic() {
    let state = Fixture::new()
        .progressing(20, 0)
        .with(|r| {
            r.analysis.interval = Duration::from_secs(10);
            r.last_step_at = Some(t(-20));
            r.traffic_since = Some(t(0));
        })
        .done();
    // max(interval, window) = 10 s, cut at the revision's first traffic and rounded down to
    // whole seconds (the provider rounds up).
    assert_eq!(
        sample_window(&state, t(6) + ms(700), WINDOW, Duration::ZERO),
        Some(Duration::from_secs(6))
    );
    assert_eq!(
        evidence_window(&state, t(25), WINDOW),
        Ok(Duration::from_secs(10))
    );
    assert_eq!(
        evidence_window(&state, t(3), WINDOW),
        Err(Duration::from_secs(1))
    );
    let d = decide(&state, &windowed(measured(70.0, 20.0)), t(6) + ms(700));
    assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
}

#[test]
fn a_new_revision_starts_its_evidence_from_its_own_first_step() {
    let state = Fixture::new()
        .progressing(40, 0)
        .with(|r| r.traffic_since = Some(t(-100)))
        .done();
    let mut o = windowed(measured(100.0, 10.0));
    std::sync::Arc::make_mut(&mut o.canary.as_mut().unwrap().template)["spec"]["containers"][0]["image"] =
        json!("podinfo:9");
    let restarted = decide(&state, &o, t(1)).next;
    assert_eq!(restarted.traffic_since, None);
    let stepped = decide(&restarted, &o, t(2)).next;
    assert_eq!(stepped.canary_weight, 10);
    assert_eq!(stepped.traffic_since, Some(t(2)));
    assert_eq!(sample_window(&stepped, t(5), WINDOW, Duration::ZERO), None);
    assert_eq!(
        sample_window(&stepped, t(6), WINDOW, Duration::ZERO),
        Some(WINDOW)
    );
}

#[test]
fn a_resumed_rollout_that_does_not_know_when_traffic_began_counts_from_resumption() {
    let state = Fixture::new()
        .progressing(30, 0)
        .with(|r| r.traffic_since = None)
        .done();
    assert_eq!(sample_window(&state, t(10), WINDOW, Duration::ZERO), None);
    let d = decide(&state, &windowed(measured(100.0, 20.0)), t(10));
    assert!(d.events.is_empty() && d.actions.is_empty());
    assert_eq!(d.next.traffic_since, Some(t(10)));
    assert!(d.changes(&state), "the resumption time is persisted");
    let d = decide(&d.next, &windowed(measured(100.0, 20.0)), t(14));
    assert_eq!(
        kinds(&d),
        vec![EventKind::CheckPassed, EventKind::WeightChanged]
    );
}

#[test]
fn state_stored_before_traffic_since_existed_still_loads() {
    let state = Fixture::new().progressing(30, 0).done();
    let mut stored = serde_json::to_value(&state).unwrap();
    stored.as_object_mut().unwrap().remove("traffic_since");
    let loaded: Rollout = serde_json::from_value(stored).unwrap();
    assert_eq!(loaded.traffic_since, None);
    assert_eq!(loaded.canary_weight, 30);
}

// Endings that tell the truth: aborts during promotion, vanished VirtualServices, refused
// writes, hand edits, and the scale-down delay.

fn promoting() -> Rollout {
    Fixture::new()
        .progressing(100, 0)
        .with(|r| {
            r.phase = Phase::Promoting;
            r.promotion_min_ready = Some(3);
            r.promoting_since = Some(t(0));
            r.promoted_template = Some(template_hash(&promoted_ga().template));
        })
        .done()
}

fn rolling_back(traffic_off: Option<i64>) -> Rollout {
    Fixture::new()
        .progressing(0, 0)
        .with(|r| {
            r.phase = Phase::RollingBack;
            r.traffic_off_canary_at = traffic_off.map(t);
            r.ending = Some(Ending {
                phase: Phase::Aborted,
                reason: "aborted: bad".into(),
            });
        })
        .done()
}

fn abort(reason: &str) -> Command {
    Command::Abort {
        reason: reason.into(),
    }
}

fn delayed(o: Observation) -> Observation {
    Observation {
        scale_down_delay: Duration::from_secs(30),
        ..o
    }
}

#[test]
fn abort_during_promotion_is_refused_saying_ga_already_rolls_out_the_canary() {
    let refused = apply_command(&promoting(), &abort("too late"), &at(100, obs()), t(1));
    let Err(Refused(why)) = refused else {
        panic!("abort during promotion was accepted: {refused:?}");
    };
    assert!(
        why.contains("already rolling out the canary's pod template")
            && why.contains("will finish promoting"),
        "{why}"
    );
    // Also once traffic is on GA and the canary waits to be scaled down.
    let draining = Fixture(promoting())
        .with(|r| {
            r.canary_weight = 0;
            r.traffic_off_canary_at = Some(t(1));
        })
        .done();
    let refused = apply_command(&draining, &abort("too late"), &at(0, obs()), t(2));
    assert!(
        matches!(&refused, Err(Refused(why)) if why.contains("is promoted")),
        "{refused:?}"
    );
}

#[test]
fn abort_with_a_vanished_virtual_service_ends_failed_at_once_saying_what_stays() {
    let state = Fixture::new().progressing(30, 0).done();
    let o = Observation {
        route: RouteView::Missing,
        ..obs()
    };
    let d = apply_command(&state, &abort("stop"), &o, t(1)).unwrap();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.next.phase, Phase::Failed);
    assert_eq!(kinds(&d), vec![EventKind::Failed]);
    let message = &d.events[0].message;
    for part in [
        "aborted: stop",
        "VirtualService test/podinfo no longer exists",
        "could not be routed back to GA",
        "30% to the canary",
        "canary podinfo-canary keeps its 3 replicas",
        "GA podinfo is unchanged",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    let o = Observation {
        route: RouteView::Broken("weights sum to 70".into()),
        ..obs()
    };
    let d = apply_command(&state, &abort("stop"), &o, t(1)).unwrap();
    assert_eq!(d.next.phase, Phase::Failed);
    assert!(d.events[0].message.contains("weights sum to 70"));
}

#[test]
fn a_vanished_virtual_service_fails_the_rollout_and_leaves_the_canary_alone() {
    let missing = |o: Observation| Observation {
        route: RouteView::Missing,
        ..o
    };
    for state in [
        Fixture::new().progressing(25, 0).done(),
        promoting(),
        rolling_back(Some(0)),
    ] {
        let d = decide(&state, &missing(measured(100.0, 10.0)), t(100));
        assert!(d.actions.is_empty(), "{:?}: {:?}", state.phase, d.actions);
        assert_eq!(d.next.phase, Phase::Failed, "{:?}", state.phase);
        assert!(
            d.events[0]
                .message
                .contains("VirtualService test/podinfo no longer exists"),
            "{}",
            d.events[0].message
        );
    }
    // A paused rollout is ended by the operator's abort (or resumed once it is back).
    let paused = Fixture::new()
        .progressing(25, 0)
        .with(|r| {
            r.phase = Phase::Paused;
            r.paused_from = Some(Phase::Progressing);
        })
        .done();
    assert!(!decide(&paused, &missing(obs()), t(1)).changes(&paused));
    assert!(apply_command(&paused, &Command::Resume, &missing(obs()), t(1)).is_err());
}

#[test]
fn an_action_retrying_cannot_fix_ends_the_rollout_failed_naming_it() {
    let o = Observation {
        failure: Some(ActionFailure {
            action: Action::ScaleCanary(0),
            error: "deployments.apps \"podinfo-canary\" is forbidden".into(),
        }),
        ..at(0, obs())
    };
    let d = decide(&rolling_back(Some(0)), &o, t(100));
    assert!(d.actions.is_empty());
    assert_eq!(d.next.phase, Phase::Failed);
    let message = &d.events[0].message;
    for part in [
        "could not scale the canary down",
        "is forbidden",
        "it was rolling back (aborted: bad)",
        "all traffic had been routed to GA",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
}

#[test]
fn an_abort_whose_first_write_cannot_be_made_keeps_the_operators_reason() {
    // The abort's route write got 404 before anything was recorded: the state is still
    // progressing, with the ending the abort meant.
    let mut state = Fixture::new().progressing(25, 0).done();
    state.ending = Some(Ending {
        phase: Phase::Aborted,
        reason: "aborted: cancel the release".into(),
    });
    let o = Observation {
        failure: Some(ActionFailure {
            action: Action::SetCanaryWeight(0),
            error: "VirtualService test/podinfo not found".into(),
        }),
        ..at(25, obs())
    };
    let d = decide(&state, &o, t(10));
    assert_eq!(d.next.phase, Phase::Failed);
    let message = &d.events[0].message;
    assert!(
        message.starts_with(
            "failed: aborted: cancel the release, but could not route all traffic to GA"
        ),
        "{message}"
    );
    assert_eq!(
        message.matches("cancel the release").count(),
        1,
        "{message}"
    );
}

#[test]
fn a_hand_edited_weight_pauses_the_rollout_and_resume_adopts_it() {
    let state = Fixture::new().progressing(20, 0).done();
    let edited = at(50, measured(100.0, 10.0));
    let d = decide(&state, &edited, t(5));
    assert!(
        d.actions.is_empty(),
        "steerer overwrote the edit: {:?}",
        d.actions
    );
    assert_eq!(d.next.phase, Phase::Paused);
    assert_eq!(d.next.paused_from, Some(Phase::Progressing));
    assert_eq!(kinds(&d), vec![EventKind::Paused]);
    assert!(
        d.events[0].message.contains("canary weight 20% -> 50%"),
        "{}",
        d.events[0].message
    );
    // Held: nothing is written while it waits for the operator.
    let held = decide(&d.next, &edited, t(100));
    assert!(held.actions.is_empty() && !held.changes(&d.next));

    let resumed = apply_command(&d.next, &Command::Resume, &edited, t(101)).unwrap();
    assert_eq!(resumed.next.phase, Phase::Progressing);
    assert_eq!(resumed.next.canary_weight, 50);
    assert!(
        resumed.events[0].message.contains("is adopted"),
        "{}",
        resumed.events[0].message
    );
    // It carries on from the adopted weight.
    let next = decide(&resumed.next, &edited, t(103));
    assert_eq!(next.actions, vec![Action::SetCanaryWeight(60)]);
}

#[test]
fn edited_routes_pause_too_and_a_broken_virtual_service_cannot_be_resumed() {
    let state = Fixture::new().progressing(20, 0).done();
    let rerouted = Observation {
        route: RouteView::Split {
            canary_weight: 20,
            fingerprint: "someone else's".into(),
        },
        ..measured(100.0, 10.0)
    };
    let d = decide(&state, &rerouted, t(5));
    assert_eq!(d.next.phase, Phase::Paused);
    assert!(
        d.events[0]
            .message
            .contains("destinations or match conditions")
    );
    let resumed = apply_command(&d.next, &Command::Resume, &rerouted, t(6)).unwrap();
    assert_eq!(
        resumed.next.route_fingerprint.as_deref(),
        Some("someone else's")
    );

    let broken = Observation {
        route: RouteView::Broken("http route 0 weights sum to 70".into()),
        ..measured(100.0, 10.0)
    };
    let d = decide(&state, &broken, t(5));
    assert_eq!(d.next.phase, Phase::Paused);
    assert!(d.events[0].message.contains("fix it, then resume"));
    let refused = apply_command(&d.next, &Command::Resume, &broken, t(6));
    assert!(
        matches!(&refused, Err(Refused(why)) if why.contains("weights sum to 70")),
        "{refused:?}"
    );
}

#[test]
fn a_weight_steerer_wrote_but_did_not_record_is_not_a_hand_edit() {
    let state = Fixture::new().progressing(20, 0).done();
    let o = Observation {
        unrecorded_weight: Some(30),
        ..at(30, measured(100.0, 10.0))
    };
    let d = decide(&state, &o, t(5));
    assert_ne!(d.next.phase, Phase::Paused);
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(30)]);
}

#[test]
fn only_the_next_step_or_zero_can_be_a_write_that_missed_its_state() {
    let state = Fixture::new().progressing(20, 0).done();
    assert!(written_unrecorded(&state, 30));
    assert!(written_unrecorded(&state, 0));
    assert!(!written_unrecorded(&state, 50));
    assert!(!written_unrecorded(&state, 10));
}

#[test]
fn a_hand_edit_during_promotion_is_recorded_and_the_promotion_goes_on() {
    let o = Observation {
        ga: Some(promoted_ga()),
        ..at(40, obs())
    };
    let d = decide(&promoting(), &o, t(1));
    assert_eq!(d.next.phase, Phase::Promoting);
    assert_eq!(
        kinds(&d),
        vec![EventKind::WeightChanged, EventKind::Promoted]
    );
    assert_eq!(d.events[0].canary_weight, 40);
    assert!(d.events[0].message.contains("during the promotion"));
    // GA is ready: the promotion's own last step routes all traffic to GA.
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.canary_weight, 0);
}

#[test]
fn a_rollback_records_when_traffic_left_the_canary() {
    let state = Fixture::new().progressing(20, 0).done();
    let d = apply_command(&state, &abort("stop"), &delayed(at(20, obs())), t(7)).unwrap();
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.traffic_off_canary_at, Some(t(7)));
    assert_eq!(d.wake, Duration::from_secs(30));
    assert!(d.events[0].message.contains("canary scaled down in 30s"));
}

#[test]
fn the_canary_is_scaled_down_only_a_delay_after_traffic_left_it() {
    let state = rolling_back(Some(0));
    let d = decide(&state, &delayed(at(0, obs())), t(10));
    assert!(d.actions.is_empty() && !d.changes(&state));
    assert_eq!(d.wake, Duration::from_secs(20));
    // Not while the VirtualService cannot be read.
    let d = decide(&state, &delayed(obs()), t(40));
    assert!(d.actions.is_empty() && !d.changes(&state));
    let d = decide(&state, &delayed(at(0, obs())), t(30));
    assert_eq!(d.actions, vec![Action::ScaleCanary(0)]);
    assert_eq!(d.next.phase, Phase::Aborted);
}

#[test]
fn traffic_found_on_the_canary_again_goes_back_to_ga_and_the_delay_starts_over() {
    let state = rolling_back(Some(0));
    let d = decide(&state, &delayed(at(20, obs())), t(29));
    assert_eq!(d.actions, vec![Action::SetCanaryWeight(0)]);
    assert_eq!(d.next.phase, Phase::RollingBack);
    assert_eq!(d.next.traffic_off_canary_at, Some(t(29)));
    assert_eq!(kinds(&d), vec![EventKind::WeightChanged]);
    let d = decide(&d.next, &delayed(at(0, obs())), t(31));
    assert!(d.actions.is_empty());
    let d = decide(&d.next, &delayed(at(0, obs())), t(59));
    assert_eq!(d.actions, vec![Action::ScaleCanary(0)]);
}

#[test]
fn a_rollback_stored_without_its_traffic_time_waits_a_whole_delay() {
    let state = rolling_back(None);
    let d = decide(&state, &delayed(at(0, obs())), t(100));
    assert!(d.actions.is_empty());
    assert_eq!(d.next.traffic_off_canary_at, Some(t(100)));
    assert!(d.changes(&state), "the start of the wait is persisted");
}

#[test]
fn a_promotion_waits_out_the_delay_after_routing_to_ga() {
    let o = delayed(Observation {
        ga: Some(promoted_ga()),
        ..at(100, obs())
    });
    let routed = decide(&promoting(), &o, t(1));
    assert_eq!(routed.actions, vec![Action::SetCanaryWeight(0)]);
    assert!(routed.events[0].message.contains("scaled down in 30s"));
    let o = delayed(Observation {
        ga: Some(promoted_ga()),
        ..at(0, obs())
    });
    let waiting = decide(&routed.next, &o, t(20));
    assert!(waiting.actions.is_empty());
    assert_eq!(waiting.next.phase, Phase::Promoting);
    let done = decide(&routed.next, &o, t(31));
    assert_eq!(done.actions, vec![Action::ScaleCanary(0)]);
    assert_eq!(done.next.phase, Phase::Succeeded);
}

/// The health gate: why a Deployment cannot take a step now.
mod halts {
    use super::*;

    fn settled(replicas: u32) -> DeploymentView {
        DeploymentView {
            namespace: "test".into(),
            name: "podinfo-canary".into(),
            generation: 2,
            observed_generation: 2,
            spec_replicas: replicas,
            status_replicas: replicas,
            updated_replicas: replicas,
            ready_replicas: replicas,
            available_replicas: replicas,
            ..Default::default()
        }
    }

    #[test]
    fn settled_deployment_does_not_halt() {
        assert_eq!(halt_reason("canary", &settled(3), None), None);
    }

    #[test]
    fn rolling_update_halts_with_updated_count() {
        let mut d = settled(3);
        d.updated_replicas = 2;
        assert_eq!(
            halt_reason("canary", &d, None).as_deref(),
            Some("canary rolling update in progress, 2 of 3 replicas updated")
        );
    }

    #[test]
    fn unobserved_generation_halts() {
        let mut d = settled(3);
        d.generation = 3;
        assert!(
            halt_reason("GA", &d, None)
                .unwrap()
                .starts_with("GA rolling update in progress")
        );
    }

    #[test]
    fn unready_pods_halt() {
        let mut d = settled(3);
        d.ready_replicas = 1;
        d.available_replicas = 1;
        d.unavailable_replicas = 2;
        assert_eq!(
            halt_reason("canary", &d, None).as_deref(),
            Some("canary has unhealthy pods, 1 of 3 replicas ready")
        );
    }

    #[test]
    fn hpa_scaling_halts() {
        let d = settled(2);
        let hpa = HpaView {
            name: "podinfo-canary".into(),
            target: "podinfo-canary".into(),
            current_replicas: 2,
            desired_replicas: 4,
            ..Default::default()
        };
        assert_eq!(
            halt_reason("canary", &d, Some(&hpa)).as_deref(),
            Some("HPA podinfo-canary is scaling the canary from 2 to 4 replicas")
        );
    }

    #[test]
    fn an_hpa_that_cannot_compute_replicas_is_not_scaling() {
        // kube-apiserver's HPA controller without metrics: ScalingActive=False, and the
        // desiredReplicas it never computed left at 0.
        let d = settled(2);
        let hpa = HpaView {
            name: "podinfo-canary".into(),
            target: "podinfo-canary".into(),
            current_replicas: 2,
            desired_replicas: 0,
            scaling_inactive: true,
            ..Default::default()
        };
        assert_eq!(halt_reason("canary", &d, Some(&hpa)), None);
    }
}

/// The judgement of one measurement, apart from fetching it.
mod evaluation {
    use super::*;

    fn sample(success: Option<f64>, rate: Option<f64>) -> Sample {
        Sample {
            success_rate: success,
            request_rate: rate,
            latency_p99_ms: None,
        }
    }

    #[test]
    fn a_success_rate_at_the_threshold_passes() {
        assert_eq!(
            evaluate(&sample(Some(99.0), Some(5.0)), &settings()),
            Verdict::Pass {
                measured: "success rate 99.00% meets 99%".to_owned(),
                request_rate: Some(5.0),
                checks: vec![CheckResult {
                    kind: CheckKind::SuccessRate,
                    name: "success_rate".into(),
                    value: Some(99.0),
                    min: Some(99.0),
                    max: None,
                    outcome: CheckOutcome::Passed,
                    detail: String::new(),
                }],
            }
        );
    }

    fn timed(success: f64, p99: Option<f64>) -> Sample {
        Sample {
            latency_p99_ms: p99,
            ..sample(Some(success), Some(5.0))
        }
    }

    fn ceiling(max: f64) -> AnalysisSettings {
        AnalysisSettings {
            max_latency_p99_ms: Some(max),
            ..settings()
        }
    }

    #[test]
    fn a_p99_at_or_under_the_ceiling_passes_and_says_both_values_against_their_bounds() {
        for p99 in [200.0, 47.5] {
            match evaluate(&timed(100.0, Some(p99)), &ceiling(200.0)) {
                Verdict::Pass { measured, .. } => {
                    assert!(
                        measured.contains("success rate 100.00% meets 99%"),
                        "{measured}"
                    );
                    assert!(
                        measured.contains(&format!("p99 latency {p99:.1}ms within 200ms")),
                        "{measured}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_p99_above_the_ceiling_fails_on_latency_alone_while_the_success_rate_is_fine() {
        match evaluate(&timed(100.0, Some(936.2)), &ceiling(200.0)) {
            Verdict::Fail {
                why,
                measured,
                failed,
                request_rate,
                checks,
            } => {
                assert_eq!(why, "p99 latency 936.2ms above ceiling 200ms");
                assert_eq!(
                    measured,
                    "p99 latency 936.2ms above ceiling 200ms, success rate 100.00% meets 99%"
                );
                assert_eq!(
                    failed,
                    Breaches {
                        success_rate: false,
                        latency_p99: true
                    }
                );
                assert_eq!(request_rate, Some(5.0));
                assert_eq!(checks[1].name, "latency_p99_ms");
                assert_eq!(checks[1].outcome, CheckOutcome::Failed);
                assert_eq!(checks[1].max, Some(200.0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn both_bounds_missed_name_both() {
        match evaluate(&timed(90.0, Some(300.0)), &ceiling(200.0)) {
            Verdict::Fail { why, failed, .. } => {
                assert_eq!(
                    why,
                    "success rate 90.00% below threshold 99%, p99 latency 300.0ms above ceiling 200ms"
                );
                assert_eq!(failed.names(), ["success_rate", "latency_p99_ms"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_p99_that_is_not_a_number_fails() {
        for p99 in [f64::NAN, f64::INFINITY] {
            assert!(
                matches!(
                    evaluate(&timed(100.0, Some(p99)), &ceiling(200.0)),
                    Verdict::Fail { failed, .. } if failed.latency_p99 && !failed.success_rate
                ),
                "{p99}"
            );
        }
    }

    #[test]
    fn no_latency_data_beside_a_good_success_rate_is_no_data_never_a_pass() {
        assert!(matches!(
            evaluate(&timed(100.0, None), &ceiling(200.0)),
            Verdict::NoData {
                key: "no canary latency",
                ..
            }
        ));
        // A failing success rate still fails without latency data.
        assert!(matches!(
            evaluate(&timed(50.0, None), &ceiling(200.0)),
            Verdict::Fail { failed, .. } if failed.success_rate && !failed.latency_p99
        ));
    }

    #[test]
    fn latency_is_not_judged_without_a_ceiling() {
        assert!(matches!(
            evaluate(&timed(100.0, Some(1e9)), &settings()),
            Verdict::Pass { .. }
        ));
    }

    #[test]
    fn a_success_rate_below_the_threshold_or_out_of_range_fails() {
        assert!(matches!(
            evaluate(&sample(Some(98.5), Some(5.0)), &settings()),
            Verdict::Fail { why, .. } if why == "success rate 98.50% below threshold 99%"
        ));
        assert!(matches!(
            evaluate(&sample(Some(150.0), Some(5.0)), &settings()),
            Verdict::Fail { why, .. } if why.contains("out of range")
        ));
    }

    #[test]
    fn too_little_traffic_and_values_that_are_not_numbers_are_no_data() {
        for s in [
            sample(Some(100.0), Some(0.5)),
            sample(None, None),
            sample(Some(f64::NAN), Some(5.0)),
            sample(Some(100.0), Some(f64::INFINITY)),
        ] {
            assert!(
                matches!(evaluate(&s, &settings()), Verdict::NoData { .. }),
                "{s:?}"
            );
        }
    }
}

/// The first state, the weight read back after a restart, and commands on finished rollouts.
mod lifecycle {
    use super::*;

    #[test]
    fn a_start_is_pending_at_the_routed_weight_with_one_started_event() {
        let base = Rollout::new(
            "r9".into(),
            "test".into(),
            "podinfo".into(),
            "podinfo-canary".into(),
            "podinfo-vs".into(),
            settings(),
            t(0),
        );
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

    #[test]
    fn a_weight_read_back_that_was_our_next_step_is_recorded_and_any_other_is_not() {
        let state = Fixture::new().progressing(20, 0).done();
        let d = resumed_at(&state, 30, t(5)).unwrap();
        assert_eq!(d.next.canary_weight, 30);
        assert_eq!(d.next.last_step_at, Some(t(5)));
        assert_eq!(d.events[0].kind, EventKind::WeightChanged);
        assert_eq!(
            d.events[0].message,
            "resumed: VirtualService podinfo routes 30% to the canary (state had 20%)"
        );
        assert!(resumed_at(&state, 20, t(5)).is_none());
        assert!(resumed_at(&state, 55, t(5)).is_none());
        let pending = Fixture::new().done();
        assert!(resumed_at(&pending, 0, t(5)).is_none());
    }

    #[test]
    fn commands_on_a_finished_rollout_abort_changes_nothing_and_the_rest_are_refused() {
        let done = Fixture::new()
            .progressing(0, 0)
            .with(|r| r.phase = Phase::Succeeded)
            .done();
        let abort = Command::Abort {
            reason: String::new(),
        };
        assert_eq!(command_on_finished(&done, &abort), Ok(()));
        let refused = command_on_finished(&done, &Command::Resume).unwrap_err();
        assert_eq!(
            refused.0,
            "rollout r1 has finished (succeeded) and cannot be resumed"
        );
        // The driver's answer is the same sentence.
        assert_eq!(
            apply_command(&done, &Command::Resume, &obs(), t(1)).unwrap_err(),
            refused
        );
    }

    #[test]
    fn ga_runs_the_canary_once_it_has_its_template_with_its_own_selector() {
        let canary = canary();
        let mut ga = ga();
        assert!(!ga_runs_canary(&ga, &canary));
        ga.template = promoted_template(&canary.template, &canary.selector, &ga.selector).into();
        assert!(ga_runs_canary(&ga, &canary));
    }
}

/// Metric templates, webhooks and approval: each gate as a pure rule.
mod gates {
    use super::*;
    use crate::domain::{CheckKind, CheckOutcome, Gates, HookAnswer, HookOutcome, MetricCheck};
    use crate::domain::{Webhook, WebhookKind};

    fn hook(name: &str, kind: WebhookKind) -> Webhook {
        Webhook {
            name: name.into(),
            kind,
            url: format!("http://127.0.0.1/{name}"),
            timeout: Duration::from_secs(1),
            metadata: BTreeMap::new(),
        }
    }

    fn answered(name: &str, kind: WebhookKind, status: u16) -> HookAnswer {
        HookAnswer {
            name: name.into(),
            kind,
            outcome: HookOutcome::Answered {
                status,
                body: String::new(),
            },
        }
    }

    fn unanswered(name: &str, kind: WebhookKind, why: &str) -> HookAnswer {
        HookAnswer {
            name: name.into(),
            kind,
            outcome: HookOutcome::Failed(why.into()),
        }
    }

    fn hooked(kinds: &[(&str, WebhookKind)]) -> impl FnOnce(&mut Rollout) {
        let hooks: Vec<Webhook> = kinds.iter().map(|(n, k)| hook(n, *k)).collect();
        move |r: &mut Rollout| r.analysis.webhooks = hooks
    }

    /// `o` with these webhook answers.
    fn answering(o: Observation, hooks: Vec<HookAnswer>) -> Observation {
        Observation { hooks, ..o }
    }

    fn metric(template: &str, min: Option<f64>, max: Option<f64>) -> MetricCheck {
        MetricCheck {
            template: template.into(),
            min,
            max,
        }
    }

    fn with_metrics(o: Observation, values: &[(&str, Result<Option<f64>, String>)]) -> Observation {
        Observation {
            metric_values: values
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect(),
            ..o
        }
    }

    // Metric templates.

    #[test]
    fn a_template_within_its_bounds_passes_and_one_outside_fails_naming_it_with_its_value() {
        let state = Fixture::new()
            .progressing(30, 0)
            .with(|r| {
                r.analysis.metrics = vec![
                    metric("request-rate", Some(1.0), None),
                    metric("error-ratio", None, Some(0.01)),
                ];
            })
            .done();
        let good = with_metrics(
            measured(100.0, 20.0),
            &[
                ("request-rate", Ok(Some(20.0))),
                ("error-ratio", Ok(Some(0.0))),
            ],
        );
        let d = decide(&state, &good, t(1));
        assert_eq!(
            kinds(&d),
            vec![EventKind::CheckPassed, EventKind::WeightChanged]
        );
        let checks = &d.events[0].checks;
        assert_eq!(checks.len(), 3, "{checks:?}");
        assert_eq!(
            (checks[1].name.as_str(), checks[1].value, checks[1].min),
            ("request-rate", Some(20.0), Some(1.0))
        );
        assert!(checks.iter().all(|c| c.outcome == CheckOutcome::Passed));
        assert!(
            d.events[0].message.contains("metric request-rate 20 >= 1")
                && d.events[0].message.contains("metric error-ratio 0 <= 0.01"),
            "{}",
            d.events[0].message
        );

        let bad = with_metrics(
            measured(100.0, 20.0),
            &[
                ("request-rate", Ok(Some(20.0))),
                ("error-ratio", Ok(Some(0.2))),
            ],
        );
        let d = decide(&state, &bad, t(1));
        assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
        assert_eq!(d.next.failed_checks, 1);
        let event = d.events[0].clone().record("r1", 2, t(1));
        assert_eq!(event.failed_names(), ["error-ratio"]);
        assert!(
            event
                .message
                .starts_with("check failed at weight 30%: metric error-ratio 0.2 above max 0.01, "),
            "{}",
            event.message
        );
        let record = d.next.last_analysis.unwrap();
        assert_eq!(record.failed_names(), ["error-ratio"]);
        assert_eq!(record.checks[2].value, Some(0.2));
        assert_eq!(record.checks[2].outcome, CheckOutcome::Failed);
    }

    #[test]
    fn a_template_without_data_or_whose_query_failed_is_no_data_never_a_pass() {
        let state = Fixture::new()
            .progressing(30, 0)
            .with(|r| r.analysis.metrics = vec![metric("request-rate", Some(1.0), None)])
            .done();
        for value in [
            Ok(None),
            Ok(Some(f64::NAN)),
            Err("prometheus query timed out".to_owned()),
        ] {
            let o = with_metrics(measured(100.0, 20.0), &[("request-rate", value.clone())]);
            let d = decide(&state, &o, t(1));
            assert_eq!(kinds(&d), vec![EventKind::CheckNoData], "{value:?}");
            assert_eq!(d.next.canary_weight, 30);
            assert_eq!(d.next.failed_checks, 0);
            let check = &d.events[0].checks[1];
            assert_eq!(check.outcome, CheckOutcome::NoData);
            assert!(!check.detail.is_empty());
        }
        // Not measured at all (a template the server no longer has comes as an error).
        let d = decide(&state, &measured(100.0, 20.0), t(1));
        assert_eq!(kinds(&d), vec![EventKind::CheckNoData]);
    }

    #[test]
    fn an_infinite_template_value_fails_and_a_failing_template_fails_even_with_little_traffic() {
        let state = Fixture::new()
            .progressing(30, 0)
            .with(|r| r.analysis.metrics = vec![metric("queue", None, Some(10.0))])
            .done();
        let inf = with_metrics(measured(100.0, 20.0), &[("queue", Ok(Some(f64::INFINITY)))]);
        assert_eq!(
            kinds(&decide(&state, &inf, t(1))),
            vec![EventKind::CheckFailed]
        );
        let quiet = with_metrics(measured(100.0, 0.1), &[("queue", Ok(Some(50.0)))]);
        let d = decide(&state, &quiet, t(1));
        assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
        assert!(
            d.events[0].message.contains("success rate not judged"),
            "{}",
            d.events[0].message
        );
    }

    // Rollout and rollback webhooks.

    #[test]
    fn a_rollout_webhook_that_refuses_or_does_not_answer_fails_the_check() {
        let state = Fixture::new()
            .progressing(30, 0)
            .with(hooked(&[("smoke", WebhookKind::Rollout)]))
            .done();
        let ok = answering(
            measured(100.0, 20.0),
            vec![answered("smoke", WebhookKind::Rollout, 200)],
        );
        let d = decide(&state, &ok, t(1));
        assert_eq!(
            kinds(&d),
            vec![EventKind::CheckPassed, EventKind::WeightChanged]
        );
        assert!(d.events[0].message.contains("webhook smoke: HTTP 200"));
        for answer in [
            answered("smoke", WebhookKind::Rollout, 500),
            unanswered("smoke", WebhookKind::Rollout, "timed out after 1s"),
            unanswered("smoke", WebhookKind::Rollout, "could not connect: refused"),
        ] {
            let o = answering(measured(100.0, 20.0), vec![answer.clone()]);
            let d = decide(&state, &o, t(1));
            assert_eq!(kinds(&d), vec![EventKind::CheckFailed], "{answer:?}");
            let event = d.events[0].clone().record("r1", 2, t(1));
            assert_eq!(event.failed_names(), ["smoke"]);
            let check = &event.checks[1];
            assert_eq!(check.kind, CheckKind::Webhook);
            assert_eq!(check.detail, answer.detail());
        }
    }

    #[test]
    fn a_rollback_webhook_saying_yes_rolls_back_at_once_and_anything_else_carries_on() {
        let state = Fixture::new()
            .progressing(30, 0)
            .with(hooked(&[("kill", WebhookKind::Rollback)]))
            .done();
        let yes = answering(
            measured(100.0, 20.0),
            vec![answered("kill", WebhookKind::Rollback, 200)],
        );
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
            let o = answering(measured(100.0, 20.0), vec![carry_on]);
            let d = decide(&state, &o, t(1));
            assert_eq!(
                kinds(&d),
                vec![EventKind::CheckPassed, EventKind::WeightChanged]
            );
        }
    }

    #[test]
    fn check_webhooks_are_due_only_with_a_check_that_will_be_judged() {
        let state = Fixture::new()
            .progressing(100, 0)
            .with(hooked(&[
                ("smoke", WebhookKind::Rollout),
                ("kill", WebhookKind::Rollback),
                ("gate", WebhookKind::ConfirmPromotion),
                ("load", WebhookKind::PreRollout),
            ]))
            .done();
        let due = hooks_due(&state, &windowed(obs()), t(1), None);
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
        assert!(hooks_due(&state, &windowed(obs()), early, None).is_empty());
        let mut rolling = windowed(obs());
        rolling.canary.as_mut().unwrap().updated_replicas = 1;
        assert!(hooks_due(&state, &rolling, t(1), None).is_empty());
        // Below the maximum weight, no confirm-promotion.
        let lower = Fixture(state.clone()).with(|r| r.canary_weight = 50).done();
        assert_eq!(
            hooks_due(&lower, &windowed(obs()), t(1), None),
            [WebhookKind::Rollout, WebhookKind::Rollback]
        );
    }

    // Confirm-rollout.

    fn awaiting_confirmation() -> Rollout {
        Fixture::new()
            .with(hooked(&[
                ("approve", WebhookKind::ConfirmRollout),
                ("kill", WebhookKind::Rollback),
            ]))
            .done()
    }

    #[test]
    fn a_start_waits_for_confirm_rollout_halted_before_preparing_the_canary() {
        let state = awaiting_confirmation();
        let mut o = obs();
        o.canary.as_mut().unwrap().spec_replicas = 0;
        let no = answering(
            o.clone(),
            vec![
                answered("approve", WebhookKind::ConfirmRollout, 403),
                answered("kill", WebhookKind::Rollback, 404),
            ],
        );
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
        let yes = answering(
            o.clone(),
            vec![
                answered("approve", WebhookKind::ConfirmRollout, 200),
                answered("kill", WebhookKind::Rollback, 404),
            ],
        );
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
        let waiting = Fixture(awaiting_confirmation())
            .with(|r| {
                r.halted_since = Some(t(0));
                r.halt_reason = Some("waiting for confirm-rollout webhook approve".into());
            })
            .done();
        let d = decide(&waiting, &obs(), t(11));
        assert_eq!(d.next.phase, Phase::RollingBack);
        assert!(d.next.ending.unwrap().reason.starts_with(
            "progress deadline of 10s exceeded: waiting for the confirm-rollout webhooks"
        ),);
        let killed = answering(
            obs(),
            vec![
                answered("approve", WebhookKind::ConfirmRollout, 403),
                answered("kill", WebhookKind::Rollback, 200),
            ],
        );
        let d = decide(&awaiting_confirmation(), &killed, t(1));
        assert_eq!(d.next.phase, Phase::RollingBack);
        assert_eq!(kinds(&d), vec![EventKind::RollingBack]);
    }

    // Pre-rollout.

    fn ready_with_load_test() -> Rollout {
        Fixture::new()
            .prepared()
            .with(hooked(&[("load", WebhookKind::PreRollout)]))
            .done()
    }

    #[test]
    fn pre_rollout_runs_once_the_canary_is_ready_and_a_refusal_fails_a_check_at_weight_zero() {
        let state = ready_with_load_test();
        assert_eq!(
            hooks_due(&state, &obs(), t(1), None),
            [WebhookKind::PreRollout]
        );
        let mut rolling = obs();
        rolling.canary.as_mut().unwrap().updated_replicas = 1;
        assert!(hooks_due(&state, &rolling, t(1), None).is_empty());

        let no = answering(obs(), vec![answered("load", WebhookKind::PreRollout, 500)]);
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
        assert!(hooks_due(&d.next, &obs(), t(1) + ms(500), None).is_empty());
        assert_eq!(
            hooks_due(&d.next, &obs(), t(2), None),
            [WebhookKind::PreRollout]
        );
        let waiting = decide(&d.next, &obs(), t(1) + ms(500));
        assert!(waiting.events.is_empty() && waiting.actions.is_empty());

        let yes = answering(obs(), vec![answered("load", WebhookKind::PreRollout, 200)]);
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
        let state = Fixture(ready_with_load_test())
            .with(|r| r.failed_checks = 2)
            .done();
        let no = answering(
            obs(),
            vec![unanswered(
                "load",
                WebhookKind::PreRollout,
                "timed out after 1s",
            )],
        );
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

    // Confirm-promotion and approval.

    fn at_max(f: impl FnOnce(&mut Rollout)) -> Rollout {
        Fixture::new().progressing(100, 0).with(f).done()
    }

    #[test]
    fn confirm_promotion_holds_at_the_maximum_weight_until_it_says_yes() {
        let state = at_max(hooked(&[("gate", WebhookKind::ConfirmPromotion)]));
        let no = answering(
            measured(100.0, 20.0),
            vec![answered("gate", WebhookKind::ConfirmPromotion, 423)],
        );
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
        let yes = answering(
            measured(100.0, 20.0),
            vec![answered("gate", WebhookKind::ConfirmPromotion, 200)],
        );
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
        let state = at_max(|r| {
            r.analysis.require_approval = true;
            r.analysis.max_failed_checks = 2;
        });
        let d = decide(&state, &measured(100.0, 20.0), t(1));
        assert!(d.actions.is_empty());
        assert_eq!(kinds(&d), vec![EventKind::CheckPassed, EventKind::Halted]);
        assert_eq!(
            d.next.message,
            "halted: waiting for approval: call PromoteRollout"
        );
        assert_eq!(d.next.gates.waiting_for.as_deref(), Some(APPROVAL));
        // Still judged: failing checks count and roll back, approval or not.
        let held = d.next;
        let d = decide(&held, &measured(50.0, 20.0), t(2));
        assert_eq!(kinds(&d), vec![EventKind::CheckFailed]);
        assert_eq!(d.next.gates.waiting_for.as_deref(), Some(APPROVAL));
        let d = decide(&d.next, &measured(50.0, 20.0), t(3));
        assert_eq!(d.next.phase, Phase::RollingBack);
        assert_eq!(d.next.gates.waiting_for, None);
        // PromoteRollout is the approval.
        let d = apply_command(&held, &Command::Promote, &obs(), t(2)).unwrap();
        assert_eq!(d.next.phase, Phase::Promoting);
        assert_eq!(d.next.gates.waiting_for, None);
    }

    #[test]
    fn passing_checks_while_held_are_recorded_a_few_times_then_once_per_quiet_window() {
        let mut state = at_max(|r| r.analysis.require_approval = true);
        let mut recorded = Vec::new();
        for second in 1..=40 {
            let d = decide(&state, &measured(100.0, 20.0), t(second));
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
        let d = decide(&state, &measured(100.0, 20.0), t(63));
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

    // Post-rollout.

    #[test]
    fn post_rollout_is_called_once_traffic_left_the_canary_and_the_rollout_ends_after() {
        let state = Fixture(rolling_back(Some(0)))
            .with(hooked(&[("notify", WebhookKind::PostRollout)]))
            .done();
        assert_eq!(hook_phase(&state, WebhookKind::PostRollout), Phase::Aborted);
        assert_eq!(
            hooks_due(&state, &at(0, obs()), t(1), None),
            [WebhookKind::PostRollout]
        );
        // Not called yet: the rollout does not end.
        let d = decide(&state, &at(0, obs()), t(1));
        assert_eq!(d.next.phase, Phase::RollingBack);
        assert!(d.events.is_empty());
        let failed = answering(
            at(0, obs()),
            vec![answered("notify", WebhookKind::PostRollout, 500)],
        );
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
        assert!(hooks_due(&d.next, &at(0, obs()), t(2), None).is_empty());
    }

    #[test]
    fn post_rollout_after_a_promotion_names_the_success_and_leaves_the_message_alone() {
        let state = Fixture(promoting())
            .with(|r| {
                r.traffic_off_canary_at = Some(t(0));
                r.message = "GA runs revision x; canary scaled down in 30s".into();
            })
            .with(hooked(&[("notify", WebhookKind::PostRollout)]))
            .done();
        assert_eq!(
            hook_phase(&state, WebhookKind::PostRollout),
            Phase::Succeeded
        );
        let sent = delayed(answering(
            at(0, obs()),
            vec![answered("notify", WebhookKind::PostRollout, 204)],
        ));
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
        let state = Fixture::new()
            .progressing(30, 0)
            .with(|r| {
                r.gates = Gates {
                    rollout_confirmed: true,
                    pre_rollout_passed: true,
                    post_rollout_sent: false,
                    waiting_for: None,
                };
                r.revision = "old".into();
            })
            .done();
        let d = decide(&state, &obs(), t(1));
        assert_eq!(kinds(&d), vec![EventKind::Restarted]);
        assert_eq!(d.next.gates, Gates::default());
    }

    #[test]
    fn state_stored_before_gates_and_breakdowns_existed_still_loads() {
        let state = Fixture::new()
            .progressing(30, 0)
            .with(|r| {
                r.last_analysis = Some(AnalysisRecord {
                    sample: Sample::default(),
                    time: t(0),
                    failed: Breaches::default(),
                    checks: Vec::new(),
                })
            })
            .done();
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
}

#[test]
fn checks_fall_on_shared_ticks_counted_from_the_epoch() {
    let five = Duration::from_secs(5);
    let ten = Duration::from_secs(10);
    // t(0) is a whole multiple of 5 s (and 10 s) since the epoch.
    assert_eq!(until_tick(t(0), ten, five), Duration::ZERO);
    assert_eq!(
        until_tick(t(0) + ms(900), ten, five),
        Duration::ZERO,
        "within the slack"
    );
    assert_eq!(
        until_tick(t(0) + ms(1200), ten, five),
        Duration::from_millis(3800)
    );
    assert_eq!(until_tick(t(3), ten, five), Duration::from_secs(2));
    assert_eq!(until_tick(t(7), ten, five), Duration::from_secs(3));
    // An interval shorter than the tick is the period, with half of it as slack.
    let one = Duration::from_secs(1);
    assert_eq!(until_tick(t(3) + ms(400), one, five), Duration::ZERO);
    assert_eq!(
        until_tick(t(3) + ms(600), one, five),
        Duration::from_millis(400)
    );
    // No tick: every moment is one.
    assert_eq!(
        until_tick(t(3) + ms(600), ten, Duration::ZERO),
        Duration::ZERO
    );
}

#[test]
fn a_due_check_waits_for_the_next_tick_and_then_runs_with_it() {
    let state = Fixture::new()
        .progressing(20, 0)
        .with(|r| r.analysis.interval = Duration::from_secs(10))
        .done();
    let ticking = Observation {
        check_tick: Duration::from_secs(5),
        ..measured(100.0, 20.0)
    };
    // Due since t(10), but t(12) is 2 s past a tick: nothing is measured or decided yet.
    assert_eq!(
        sample_window(&state, t(12), Duration::from_secs(4), ticking.check_tick),
        None
    );
    let waiting = decide(&state, &ticking, t(12));
    assert!(waiting.actions.is_empty() && waiting.events.is_empty());
    assert!(
        !waiting.changes(&state),
        "waiting for the tick writes nothing"
    );
    assert_eq!(waiting.wake, Duration::from_secs(3));
    // On the tick: measured and judged, and the next check is an interval later.
    assert!(sample_window(&state, t(15), Duration::from_secs(4), ticking.check_tick).is_some());
    let checked = decide(&state, &ticking, t(15));
    assert_eq!(checked.actions, vec![Action::SetCanaryWeight(30)]);
    assert_eq!(checked.next.last_step_at, Some(t(15)));
    assert_eq!(checked.wake, Duration::from_secs(10));
    // Without ticks the same check runs at once.
    let at_once = decide(&state, &measured(100.0, 20.0), t(12));
    assert_eq!(at_once.actions, vec![Action::SetCanaryWeight(30)]);
}

#[test]
fn a_halt_on_workloads_waits_on_their_changes_but_never_past_the_deadline() {
    let state = Fixture::new()
        .prepared()
        .with(|r| r.analysis.interval = Duration::from_secs(10))
        .with(|r| r.halted_since = Some(t(0)))
        .done();
    let mut o = obs();
    o.canary.as_mut().unwrap().updated_replicas = 2;
    let d = decide(&state, &o, t(1));
    assert_eq!(d.wake, POLL);
    assert_eq!(d.watch, Some(WATCHED_POLL));
    // Two seconds before the progress deadline (10 s), the wait ends with it.
    let late = decide(&d.next, &o, t(8));
    assert_eq!(late.watch, Some(Duration::from_secs(2)));
    // An interval shorter than WATCHED_POLL bounds the wait.
    let short = Fixture::new()
        .prepared()
        .with(|r| r.analysis.interval = Duration::from_secs(2))
        .done();
    assert_eq!(decide(&short, &o, t(1)).watch, Some(Duration::from_secs(2)));
}

#[test]
fn webhooks_approvals_and_actions_keep_the_poll() {
    let mut o = obs();
    o.canary.as_mut().unwrap().updated_replicas = 2;
    let approval = Fixture::new()
        .prepared()
        .with(|r| r.analysis.interval = Duration::from_secs(10))
        .with(|r| r.analysis.require_approval = true)
        .done();
    let d = decide(&approval, &o, t(1));
    assert_eq!((d.wake, d.watch), (POLL, None));
    // Preparing writes (images, replicas): the driver looks again on the poll.
    let unprepared = Fixture::new()
        .with(|r| r.analysis.interval = Duration::from_secs(10))
        .done();
    let mut scaled_down = obs();
    scaled_down.canary.as_mut().unwrap().spec_replicas = 0;
    let d = decide(&unprepared, &scaled_down, t(1));
    assert!(!d.actions.is_empty());
    assert_eq!(d.watch, None);
    // A step waits for its interval, not for the objects.
    let ready = Fixture::new()
        .prepared()
        .with(|r| r.analysis.interval = Duration::from_secs(10))
        .done();
    let d = decide(&ready, &obs(), t(1));
    assert_eq!(d.next.phase, Phase::Progressing);
    assert_eq!(d.watch, None);
}
