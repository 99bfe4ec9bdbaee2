//! Which route a start drives: named by kind and name, or found when the request names none
//! (the one route of any supported kind in the namespace sending traffic to both GA's and the
//! canary's Services). None, or several, is refused naming what was found, and nothing
//! changes. A kind the cluster does not serve is refused saying its CRD is missing. Runs for
//! the example route of every kind (`STEERER_ROUTE`).

use std::time::Duration;

use crate::common::{CANARY, GA, Harness, NS, Options, artifacts, routes, workloads};
use crate::rollout_bad_input::assert_no_rollouts;
use kube::api::{DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use steerer::v1::{Analysis, Phase, RouteRef, StartRolloutRequest};
use steerer_server::domain::RouteKind;
use tonic::Code;

/// A start for the example that names no route.
fn unnamed(h: &Harness) -> StartRolloutRequest {
    h.request(Analysis {
        step_weight: Some(50),
        ..Default::default()
    })
}

/// Starts, expecting a refusal with `code`; returns its message.
async fn refused(h: &mut Harness, request: StartRolloutRequest, code: Code) -> String {
    let status = h.client.start_rollout(request).await.unwrap_err();
    assert_eq!(status.code(), code, "{}", status.message());
    status.message().to_owned()
}

async fn assert_nothing_changed(h: &mut Harness, route_before: &Value) {
    assert_no_rollouts(h).await;
    assert_eq!(&h.route_object().await, route_before);
}

/// Another route splitting the example's traffic, of a kind other than the example's.
fn another_route(example: RouteKind) -> (RouteKind, Value) {
    let (ga, canary) = (GA, CANARY);
    if example == RouteKind::VirtualService {
        let route = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo-gateway", "namespace": NS},
            "spec": {"rules": [{"backendRefs": [
                {"name": ga, "port": 9898, "weight": 100},
                {"name": canary, "port": 9898, "weight": 0},
            ]}]},
        });
        (RouteKind::HttpRoute, route)
    } else {
        let route = json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "podinfo-mesh", "namespace": NS},
            "spec": {"hosts": ["podinfo-mesh"], "http": [{"route": [
                {"destination": {"host": ga}, "weight": 100},
                {"destination": {"host": canary}, "weight": 0},
            ]}]},
        });
        (RouteKind::VirtualService, route)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_naming_no_route_drives_the_one_route_sending_to_both_services() {
    let mut h = Harness::start().await;
    let started = h.start_rollout(unnamed(&h)).await;
    assert_eq!(
        started.route,
        Some(RouteRef {
            kind: h.route.name().to_owned(),
            name: GA.to_owned()
        })
    );
    let done = h.wait_for_end(&started.id, Duration::from_secs(60)).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routes_sending_to_both_services_are_refused_by_name_and_nothing_changes() {
    let mut h = Harness::start().await;
    let (kind, other) = another_route(h.route);
    let other: DynamicObject = serde_json::from_value(other).unwrap();
    let name = other.metadata.name.clone().unwrap();
    routes(&h.kube, kind)
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let before = h.route_object().await;

    let request = unnamed(&h);
    let message = refused(&mut h, request, Code::FailedPrecondition).await;
    assert!(
        message.starts_with(
            "several routes in namespace test send traffic to both podinfo and podinfo-canary"
        ),
        "{message}"
    );
    let example = format!("{}/{GA}", h.route.name().to_ascii_lowercase());
    let another = format!("{}/{name}", kind.name().to_ascii_lowercase());
    assert!(message.contains(&example), "{message}");
    assert!(message.contains(&another), "{message}");
    assert_nothing_changed(&mut h, &before).await;

    // Naming one of them is enough.
    let mut named = unnamed(&h);
    named.route = Some(RouteRef {
        kind: h.route.name().to_owned(),
        name: GA.to_owned(),
    });
    let started = h.start_rollout(named).await;
    assert_eq!(started.route.unwrap().kind, h.route.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_sending_to_both_services_is_refused_and_nothing_changes() {
    let mut h = Harness::start().await;
    routes(&h.kube, h.route)
        .delete(GA, &DeleteParams::default())
        .await
        .unwrap();
    let request = unnamed(&h);
    let message = refused(&mut h, request, Code::FailedPrecondition).await;
    assert!(
        message.starts_with(
            "no route in namespace test sends traffic to both podinfo and podinfo-canary"
        ),
        "{message}"
    );
    assert!(
        message.contains("VirtualService, HTTPRoute, GRPCRoute"),
        "{message}"
    );
    assert_no_rollouts(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edit_of_the_weights_pauses_the_rollout_and_an_abort_restores_only_the_weights() {
    let mut h = Harness::start().await;
    let before = h.route_but_weights().await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(20),
            ..Default::default()
        }))
        .await;
    h.wait_until(&started.id, Duration::from_secs(30), |r| {
        r.canary_weight == 20
    })
    .await;
    h.set_weights_by_hand(55, 45).await;
    let paused = h
        .wait_for_phase(&started.id, Phase::Paused, Duration::from_secs(10))
        .await;
    assert!(
        paused.message.contains("was changed outside steerer")
            && paused.message.contains("canary weight 20% -> 45%"),
        "{}",
        paused.message
    );
    assert_eq!(
        h.weights().await,
        (55, 45),
        "steerer left the edit as it is"
    );

    h.client
        .abort_rollout(steerer::v1::AbortRolloutRequest {
            id: started.id.clone(),
            reason: "hand edit".into(),
        })
        .await
        .unwrap();
    let done = h.wait_for_end(&started.id, Duration::from_secs(30)).await;
    assert_eq!(done.phase(), Phase::Aborted, "{}", done.message);
    assert_eq!(h.weights().await, (100, 0));
    assert_eq!(h.route_but_weights().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_route_ends_the_rollout_failed_naming_it() {
    let mut h = Harness::start().await;
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(20),
            progress_deadline: Some(prost_types::Duration {
                seconds: 3,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .await;
    h.wait_until(&started.id, Duration::from_secs(30), |r| {
        r.canary_weight >= 20
    })
    .await;
    routes(&h.kube, h.route)
        .delete(GA, &DeleteParams::default())
        .await
        .unwrap();
    let done = h.wait_for_end(&started.id, Duration::from_secs(15)).await;
    assert_eq!(done.phase(), Phase::Failed, "{}", done.message);
    let gone = format!("{} test/podinfo no longer exists", h.route.name());
    assert!(done.message.contains(&gone), "{}", done.message);
}

/// A cluster without the Gateway API CRDs: the server starts, routes VirtualServices, and
/// refuses a start naming an HTTPRoute saying its CRD is missing. The simulator only: a real
/// control plane of the harness serves the Gateway API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_naming_a_kind_the_cluster_does_not_serve_is_refused_naming_its_crd() {
    let a = artifacts();
    let mut apply = vec![
        a.join("istio"),
        a.join("steerer/05-rollouts-crd.yaml"),
        a.join("namespace"),
    ];
    apply.extend(workloads(RouteKind::VirtualService));
    let mut h = Harness::start_with(Options {
        apply,
        route: RouteKind::VirtualService,
        ..Options::default()
    })
    .await;
    let _ = h.sim();
    let before = h.route_object().await;
    let mut request = unnamed(&h);
    request.route = Some(RouteRef {
        kind: "HTTPRoute".into(),
        name: GA.into(),
    });
    let message = refused(&mut h, request, Code::FailedPrecondition).await;
    assert_eq!(
        message,
        "the cluster does not serve HTTPRoutes: the CustomResourceDefinition httproutes.gateway.networking.k8s.io is missing"
    );
    assert_nothing_changed(&mut h, &before).await;

    // VirtualServices are still found.
    let started = h.start_rollout(unnamed(&h)).await;
    assert_eq!(started.route.unwrap().kind, "VirtualService");
}
