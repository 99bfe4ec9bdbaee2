//! Tests of the health gate, one situation per test.

use super::super::fixtures::*;
use super::*;
use crate::domain::{DeploymentView, HpaView, promoted_template};

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

#[test]
fn ga_runs_the_canary_once_it_has_its_template_with_its_own_selector() {
    let canary = canary();
    let mut ga = ga();
    assert!(!ga_runs_canary(&ga, &canary));
    ga.template = promoted_template(&canary.template, &canary.selector, &ga.selector).into();
    assert!(ga_runs_canary(&ga, &canary));
}
